package authz

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// MiddlewareConfig configures the Echo middleware.
type MiddlewareConfig struct {
	// Skipper skips the middleware entirely (the route is then not protected).
	// Default: never skip.
	Skipper middleware.Skipper
	// Validator verifies bearer tokens. Required.
	Validator *Validator
	// Registry holds each route's policy. Required: a matched route without a
	// policy is refused (deny by default).
	Registry *Registry
	// Metrics, when set, counts decisions by result and reason.
	Metrics *Metrics
	// DPoP, when set, accepts DPoP-bound tokens with their proofs (RFC 9449)
	// in its mode; nil is Bearer only. DPoP-bound tokens are never accepted
	// as Bearer tokens, with or without it.
	DPoP *DPoP
}

// Middleware is MiddlewareWithConfig with defaults.
func Middleware(v *Validator, reg *Registry) echo.MiddlewareFunc {
	return MiddlewareWithConfig(MiddlewareConfig{Validator: v, Registry: reg})
}

var notFoundHandler = reflect.ValueOf(echo.NotFoundHandler).Pointer()

// MiddlewareWithConfig returns middleware that authenticates the bearer token
// and authorizes it against the policy declared for the matched route
// (method + c.Path()). Register it with e.Use so it runs after routing.
//
// A denial is returned to Echo's error handler, as Echo's own middleware
// does: an *echo.HTTPError whose Code and Message are AnswerOf's status and
// body and whose Internal is the *Error, with AnswerOf's headers already on
// the response. Echo's default error handler answers it as it is; an error
// handler of the service (pkg/platform's) finds the *Error with errors.As,
// logs it with the request and renders it with AnswerOf. The answers
// (RFC 6750; body {"error":"<code>","message":"..."}):
//   - no token: 401, WWW-Authenticate: Bearer realm="authmesh"
//   - bad token: 401, ... error="invalid_token", error_description="..."
//   - missing permission: 403, ... error="insufficient_scope", scope="<needed>"
//   - token of a kind the policy does not admit: 403, ... error="insufficient_scope",
//     error_description="users_only" (or "client_not_allowed", "clients_only")
//   - no keys obtainable: 503 with Retry-After
//   - matched route without a policy: 403 no_policy
//
// CORS preflight requests (OPTIONS with Origin and Access-Control-Request-Method
// and no Authorization) pass through untouched, as do requests Echo answers
// itself with 404 or 405. On success the claims are in the request's context
// (ClaimsFromEcho, ClaimsFromContext, TokenFromContext). It panics when
// Validator or Registry is missing.
func MiddlewareWithConfig(cfg MiddlewareConfig) echo.MiddlewareFunc {
	if cfg.Validator == nil {
		panic("authz: middleware requires a Validator")
	}
	if cfg.Registry == nil {
		panic("authz: middleware requires a Registry")
	}
	if cfg.Skipper == nil {
		cfg.Skipper = middleware.DefaultSkipper
	}

	deny := func(c echo.Context, p Policy, claims *Claims, err error) error {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeInvalidToken, Reason: "internal", Description: "the token could not be verified", Err: err}
		}
		cfg.Metrics.Decision("deny", reasonOf(e))
		RecordDecision(c.Request().Context(), p, claims, e)
		a := AnswerOf(e)
		h := c.Response().Header()
		for k, v := range a.Header {
			h[k] = v
		}
		return &echo.HTTPError{Code: a.Status, Message: a.Body, Internal: e}
	}

	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if cfg.Skipper(c) {
				return next(c)
			}
			req := c.Request()
			authz := req.Header.Get(echo.HeaderAuthorization)
			if req.Method == http.MethodOptions && authz == "" &&
				req.Header.Get(echo.HeaderOrigin) != "" && req.Header.Get(echo.HeaderAccessControlRequestMethod) != "" {
				return next(c)
			}
			policy, ok := cfg.Registry.Policy(req.Method, c.Path())
			if !ok || !policy.Declared() {
				if routeUnmatched(c) {
					return next(c) // Echo answers 404/405 itself
				}
				return deny(c, policy, nil, &Error{Code: CodeNoPolicy, Reason: "no_policy", Description: "no access policy is declared for this route"})
			}
			if policy.IsPublic() {
				cfg.Metrics.Decision("allow", "public")
				RecordDecision(req.Context(), policy, nil, nil)
				return next(c)
			}
			id, err := authenticate(req, cfg.Validator, cfg.DPoP, policy.DPoPRequired())
			if err != nil {
				return deny(c, policy, nil, err)
			}
			if err := policy.Authorize(id.claims); err != nil {
				return deny(c, policy, id.claims, err)
			}
			cfg.Metrics.Decision("allow", "ok")
			RecordDecision(req.Context(), policy, id.claims, nil)
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), identityKey, id)))
			return next(c)
		}
	}
}

// routeUnmatched reports whether the router found no route: Echo then runs
// its own 404 handler, or the 405/OPTIONS handlers after setting Allow.
func routeUnmatched(c echo.Context) bool {
	if c.Get(echo.ContextKeyHeaderAllow) != nil {
		return true
	}
	h := c.Handler()
	return h == nil || reflect.ValueOf(h).Pointer() == notFoundHandler
}

func reasonOf(e *Error) string {
	if e.Reason != "" {
		return e.Reason
	}
	return string(e.Code)
}
