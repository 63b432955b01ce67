package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/labstack/echo/v4"
)

// RequestIDFromContext returns the id of the request being served, if any.
func RequestIDFromContext(ctx context.Context) string {
	id, _ := natsauth.RequestIDFromContext(ctx)
	return id
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validRequestID keeps an inbound X-Request-Id only when it is short and made
// of safe characters, so a client cannot forge log structure or send huge ids.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == ':':
		default:
			return false
		}
	}
	return true
}

// requestID takes a valid inbound X-Request-Id or makes one, echoes it in the
// response and puts it, with the app's transaction token exchange
// (natsauth.WithOutbound), in the request's context, where natsauth finds
// them for every NATS message sent on behalf of the request (the trace
// context is traceHTTP's span).
func (a *App) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		req := c.Request()
		ctx := natsauth.WithRequestID(req.Context(), id)
		if a.outbound != nil {
			ctx = natsauth.WithOutbound(ctx, a.outbound)
		}
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}
