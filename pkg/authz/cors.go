package authz

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// CORS says which browsers' origins may call a service and what they may send.
type CORS struct {
	// Origins are allowed exactly (no wildcards, no patterns).
	Origins []string
	// AllowHeaders are request headers a browser may send beyond
	// Authorization, Content-Type, X-Request-Id and DPoP, which every service
	// accepts (orders adds Idempotency-Key).
	AllowHeaders []string
}

// CORSConfig returns a configuration for Echo's CORS middleware that allows
// exactly cfg's origins, the Authorization header and cfg's extra headers,
// and no credentials (bearer tokens need no cookies). Preflights are
// answered 204 by Echo.
//
//	e.Use(middleware.CORSWithConfig(authz.CORSConfig(authz.CORS{
//		Origins: []string{"http://localhost:8404"}, AllowHeaders: []string{"Idempotency-Key"}})))
func CORSConfig(cfg CORS) middleware.CORSConfig {
	allowed := slices.Clone(cfg.Origins)
	return middleware.CORSConfig{
		// A func instead of AllowOrigins: Echo turns entries with "*" into
		// patterns, and an exact list must stay exact.
		AllowOriginFunc: func(origin string) (bool, error) {
			return slices.Contains(allowed, origin), nil
		},
		AllowMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowHeaders: append([]string{echo.HeaderAuthorization, echo.HeaderContentType, echo.HeaderXRequestID, HeaderDPoP}, cfg.AllowHeaders...),
		// RFC 9449 §7.1, §8: a browser's DPoP client must read the challenge
		// and the server nonce.
		ExposeHeaders:    []string{echo.HeaderWWWAuthenticate, echo.HeaderRetryAfter, echo.HeaderXRequestID, HeaderDPoPNonce},
		AllowCredentials: false,
		MaxAge:           600,
	}
}
