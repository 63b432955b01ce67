package platform

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Request ids: this file owns the HTTP side (take the inbound X-Request-Id,
// answer it, carry it in the request's context). The header, the context
// carrier, the format and the validation rule are natsauth's
// (natsauth.NewRequestID, AcceptRequestID), shared with every NATS message
// natsauth sends and receives: pkg/platform imports natsauth, so they cannot
// live here.

// RequestIDFromContext returns the id of the request being served, if any.
func RequestIDFromContext(ctx context.Context) string {
	id, _ := natsauth.RequestIDFromContext(ctx)
	return id
}

// requestID takes a valid inbound X-Request-Id or makes one
// (natsauth.AcceptRequestID), echoes it in the response and puts it, with the
// app's transaction token exchange (natsauth.WithOutbound), in the request's
// context, where natsauth finds them for every NATS message sent on behalf of
// the request (the trace context is traceHTTP's span).
func (a *App) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		id := natsauth.AcceptRequestID(req.Header.Get(natsauth.HeaderRequestID))
		c.Response().Header().Set(natsauth.HeaderRequestID, id)
		ctx := natsauth.WithRequestID(req.Context(), id)
		if a.outbound != nil {
			ctx = natsauth.WithOutbound(ctx, a.outbound)
		}
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}
