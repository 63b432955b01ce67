package authz_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// newValidator returns a validator trusting iss, with extra options.
// newIssuerValidator returns a test issuer and a validator of its tokens
// with the default settings.
func newIssuerValidator(t testing.TB) (*authztest.Issuer, *authz.Validator) {
	t.Helper()
	iss := authztest.NewIssuer(t)
	return iss, newValidator(t, iss, nil)
}

func newValidator(t testing.TB, iss *authztest.Issuer, keyOpts []authz.KeyOption, opts ...authz.Option) *authz.Validator {
	t.Helper()
	keys, err := authz.NewKeyProvider(append([]authz.KeyOption{authz.WithJWKSURL(iss.JWKSURL())}, keyOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(keys, append([]authz.Option{
		authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newEcho returns an Echo app with the middleware and a few routes.
func newEcho(t testing.TB, v *authz.Validator) (*echo.Echo, *authz.Registry) {
	t.Helper()
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.Middleware(v, reg))
	me := func(c echo.Context) error {
		cl, ok := authz.ClaimsFromEcho(c)
		if !ok {
			return c.String(http.StatusInternalServerError, "no claims")
		}
		cl2, ok := authz.ClaimsFromContext(c.Request().Context())
		if !ok || cl2 != cl {
			return c.String(http.StatusInternalServerError, "no claims in request context")
		}
		return c.JSON(http.StatusOK, map[string]string{"sub": cl.Subject})
	}
	authz.GET(e, reg, "/v1/me", me, authz.RequireAll("read:profile").Users())
	authz.POST(e, reg, "/v1/users/:id/block", me, authz.RequireAll("block:users").Users())
	authz.GET(e, reg, "/v1/catalog", func(c echo.Context) error { return c.String(200, "[]") }, authz.Public())
	e.GET("/v1/forgotten", me) // no policy on purpose
	return e, reg
}

func do(e *echo.Echo, method, path, token string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
