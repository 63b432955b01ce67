package authz

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// CORSConfig returns a configuration for Echo's CORS middleware that allows
// exactly the given origins (no wildcards, no patterns), the Authorization
// header, and no credentials (bearer tokens need no cookies). Preflights are
// answered 204 by Echo.
//
//	e.Use(middleware.CORSWithConfig(authz.CORSConfig("http://localhost:8404")))
func CORSConfig(origins ...string) middleware.CORSConfig {
	allowed := slices.Clone(origins)
	return middleware.CORSConfig{
		// A func instead of AllowOrigins: Echo turns entries with "*" into
		// patterns, and an exact list must stay exact.
		AllowOriginFunc: func(origin string) (bool, error) {
			return slices.Contains(allowed, origin), nil
		},
		AllowMethods:     []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowHeaders:     []string{echo.HeaderAuthorization, echo.HeaderContentType, "Idempotency-Key", echo.HeaderXRequestID},
		ExposeHeaders:    []string{echo.HeaderWWWAuthenticate, "Retry-After", echo.HeaderXRequestID},
		AllowCredentials: false,
		MaxAge:           600,
	}
}
