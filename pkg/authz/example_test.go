package authz_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// exampleIssuer stands in for the Auth0 tenant (AUTH0_ISSUER, AUTH0_JWKS_URL).
func exampleIssuer() (*authztest.Issuer, func()) {
	t := &exampleTB{}
	iss := authztest.NewIssuer(t)
	return iss, t.cleanup
}

// A complete Echo service: keys, validator, deny-by-default middleware, routes
// declared with their policies, and the start-up check.
func Example() {
	iss, done := exampleIssuer()
	defer done()
	ctx := context.Background()

	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(iss.JWKSURL()))
	_ = keys.Start(ctx) // a failure is retried in the background; requests get 503 meanwhile
	v, _ := authz.NewValidator(keys, authz.WithIssuers(iss.Issuer()), authz.WithAudiences("https://api.authmesh.dev"))

	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(middleware.CORSWithConfig(authz.CORSConfig(authz.CORS{Origins: []string{"http://localhost:8404"}})))
	e.Use(authz.Middleware(v, reg))
	authz.GET(e, reg, "/v1/me", func(c echo.Context) error {
		claims, _ := authz.ClaimsFromEcho(c)
		return c.String(http.StatusOK, claims.Subject)
	}, authz.RequireAll("read:profile").Users())
	authz.GET(e, reg, "/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) }, authz.Public())
	if err := reg.Check(e.Routes()); err != nil {
		log.Fatal(err) // a route without a policy never ships
	}

	for _, token := range []string{"", iss.Token(&exampleTB{}, nil)} {
		req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body.String())
	}
	// Output:
	// 401 Bearer realm="authmesh" {"error":"missing_token","message":"a bearer token is required"}
	//
	// 200  auth0|6553da60a54af58e29493993
}

// Policies say who may call — users, named clients (azp), or both — and
// then what: user tokens need the permissions, M2M tokens the scopes.
func ExamplePolicy_Authorize() {
	user := &authz.Claims{Subject: "auth0|1", Permissions: []string{"read:orders"}, Scopes: authz.ParseScopes("read:all-orders")}
	m2m := &authz.Claims{Subject: "billing-service@clients", AZP: "billing-service", GTY: []string{"client-credentials"}, Scopes: authz.ParseScopes("read:all-orders")}

	p := authz.RequireAny("read:all-orders").Users().Clients("billing-service")
	fmt.Println(p.Authorize(user) == nil, p.Authorize(m2m) == nil)
	fmt.Println(authz.RequireAny("read:all-orders").Users().Authorize(m2m))
	fmt.Println(authz.RequireAny("read:all-orders").Clients("orders-service").Authorize(m2m))
	// Output:
	// false true
	// insufficient_scope: users_only: only user tokens may call this; service tokens are refused
	// insufficient_scope: client_not_allowed: this service client may not call this
}

// Start-up checks: every route has a policy, every permission exists in the tenant.
func ExampleRegistry_CheckPermissions() {
	known, err := authz.LoadTenantPermissions("../../deploy/tenant.yaml", "https://api.authmesh.dev")
	if err != nil {
		log.Fatal(err)
	}
	reg := authz.NewRegistry()
	reg.Set(http.MethodGet, "/v1/orders", authz.RequireAll("read:orders").Users())
	reg.Set(http.MethodPost, "/v1/rockets", authz.RequireAll("launch:rockets").Users())
	fmt.Println(reg.CheckPermissions(known))
	// Output:
	// authz: route POST /v1/rockets uses permission "launch:rockets" that the tenant does not define
}

// Metrics go on the registry the service exposes at /metrics.
func ExampleNewMetrics() {
	promReg := prometheus.NewRegistry()
	m, err := authz.NewMetrics(promReg, "orders")
	if err != nil {
		log.Fatal(err)
	}
	keys, _ := authz.NewKeyProvider(authz.WithDiscovery("https://tenant.eu.auth0.com/"), authz.WithKeyMetrics(m))
	v, _ := authz.NewValidator(keys, authz.WithIssuers("https://tenant.eu.auth0.com/"), authz.WithAudiences("https://api.authmesh.dev"), authz.WithMetrics(m))
	_ = authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: v, Registry: authz.NewRegistry(), Metrics: m})
	fmt.Println(v.Keys().Ready() != nil)
	// Output: true
}

// exampleTB lets examples use authztest, which wants a testing.TB.
type exampleTB struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

func (t *exampleTB) Helper()                   {}
func (t *exampleTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *exampleTB) Fatalf(f string, a ...any) { fmt.Fprintf(os.Stderr, f, a...); os.Exit(1) }
func (t *exampleTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
