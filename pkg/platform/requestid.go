package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/labstack/echo/v4"
)

type requestIDKey struct{}

// withRequestID stores the request id for code below the HTTP layer (NATS
// propagation, logs).
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestIDFromContext returns the id of the request being served, if any.
func RequestIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
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
// response and puts it in the request's context.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		c.SetRequest(c.Request().WithContext(withRequestID(c.Request().Context(), id)))
		return next(c)
	}
}
