package authz_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

func TestRegistryCheck(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	e, reg := newEcho(t, newValidator(t, iss, nil))
	g := e.Group("/v1/admin")
	authz.DELETE(g, reg, "/users/:id", func(c echo.Context) error { return nil }, authz.RequireAll("assign:roles").Users())
	e.POST("/v1/also-forgotten", func(c echo.Context) error { return nil })

	err := reg.Check(e.Routes())
	if err == nil {
		t.Fatal("Check passed with undeclared routes")
	}
	for _, want := range []string{"GET /v1/forgotten", "POST /v1/also-forgotten"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "/v1/admin/users/:id") || strings.Contains(err.Error(), "/v1/me") {
		t.Errorf("Check names a declared route: %v", err)
	}
	reg.Set(http.MethodGet, "/v1/forgotten", authz.Public())
	reg.Set(http.MethodPost, "/v1/also-forgotten", authz.Policy{}) // zero policy is not a declaration
	if err := reg.Check(e.Routes()); err == nil || !strings.Contains(err.Error(), "POST /v1/also-forgotten") {
		t.Errorf("Check = %v", err)
	}
}

// TestRegistryCheckRefusesPolicyWithoutWho: a non-public policy, on a route
// or declared for NATS, that admits neither users nor named clients stops
// the start-up check, which names where it is used.
func TestRegistryCheckRefusesPolicyWithoutWho(t *testing.T) {
	t.Parallel()
	e := echo.New()
	reg := authz.NewRegistry()
	ok := func(c echo.Context) error { return nil }
	authz.POST(e, reg, "/v1/invoices/:id/refund", ok, authz.RequireAll("refund:invoices"))
	authz.GET(e, reg, "/v1/invoices", ok, authz.RequireAll("read:invoices").Users())
	authz.GET(e, reg, "/v1/catalog", ok, authz.Public())
	authz.GET(e, reg, "/v1/who", ok, authz.Authenticated().Clients(""))
	reg.Declare("NATS endpoint authmesh.billing.orders.void", authz.RequireAll("cancel:orders"))
	reg.Declare("consumer billing-orders", authz.Authenticated().Users().Clients("orders-service"))

	err := reg.Check(e.Routes())
	if !errors.Is(err, authz.ErrPolicyWithoutWho) {
		t.Fatalf("Check = %v, want ErrPolicyWithoutWho", err)
	}
	for _, want := range []string{"route POST /v1/invoices/:id/refund", "route GET /v1/who", "NATS endpoint authmesh.billing.orders.void"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q does not name %s", err, want)
		}
	}
	for _, fine := range []string{"GET /v1/invoices\n", "/v1/catalog", "consumer billing-orders"} {
		if strings.Contains(err.Error()+"\n", fine) {
			t.Errorf("Check names %s, whose policy says who: %v", fine, err)
		}
	}

	e2 := echo.New()
	reg2 := authz.NewRegistry()
	authz.POST(e2, reg2, "/v1/invoices/:id/refund", ok, authz.RequireAll("refund:invoices").Users())
	reg2.Declare("NATS endpoint authmesh.billing.orders.void", authz.RequireAll("cancel:orders").Users().Clients("orders-service"))
	if err := reg2.Check(e2.Routes()); err != nil {
		t.Fatalf("Check = %v with every policy saying who", err)
	}
}

// deployTenant is the repository's real tenant file, the one the services
// load: the permission checks run against what is deployed, not a copy.
var deployTenant = filepath.Join("..", "..", "deploy", "tenant.yaml")

func TestRegistryCheckPermissions(t *testing.T) {
	t.Parallel()
	known, err := authz.LoadTenantPermissions(deployTenant, "https://api.authmesh.dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"read:profile", "block:users", "refund:invoices", "read:all-orders"} {
		if !slices.Contains(known, p) {
			t.Errorf("tenant permissions %v lack %s", known, p)
		}
	}
	reg := authz.NewRegistry()
	reg.Set("GET", "/v1/me", authz.RequireAll("read:profile").Users())
	reg.Set("GET", "/v1/orders", authz.RequireAny("read:orders", "read:all-orders").Users())
	if err := reg.CheckPermissions(known); err != nil {
		t.Fatalf("CheckPermissions = %v", err)
	}
	reg.Set("POST", "/v1/x", authz.RequireAll("read:profile", "launch:rockets").Users())
	err = reg.CheckPermissions(known)
	if err == nil || !strings.Contains(err.Error(), `"launch:rockets"`) || !strings.Contains(err.Error(), "POST /v1/x") {
		t.Errorf("CheckPermissions = %v", err)
	}
}

func TestLoadTenantPermissionsErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("resourceServers: [:"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, aud string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "https://api.authmesh.dev"},
		{"bad yaml", bad, "https://api.authmesh.dev"},
		{"unknown audience", deployTenant, "https://other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := authz.LoadTenantPermissions(tc.path, tc.aud); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	_, v := newIssuerValidator(t)
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(middleware.CORSWithConfig(authz.CORSConfig(authz.CORS{Origins: []string{"http://localhost:8404"}, AllowHeaders: []string{"Idempotency-Key"}})))
	e.Use(authz.Middleware(v, reg))
	authz.GET(e, reg, "/v1/me", func(c echo.Context) error { return c.String(200, "ok") }, authz.RequireAll("read:profile").Users())

	tests := []struct {
		name, origin string
		status       int
		allowOrigin  string
	}{
		{"allowed origin", "http://localhost:8404", http.StatusNoContent, "http://localhost:8404"},
		{"other origin", "http://evil.example", http.StatusNoContent, ""},
		{"origin prefix", "http://localhost:84041", http.StatusNoContent, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodOptions, "/v1/me", nil)
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if got := rec.Header().Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Errorf("Allow-Origin %q, want %q", got, tc.allowOrigin)
			}
			if allow := strings.ToLower(rec.Header().Get("Access-Control-Allow-Headers")); tc.allowOrigin != "" &&
				(!strings.Contains(allow, "authorization") || !strings.Contains(allow, "idempotency-key")) {
				t.Errorf("Allow-Headers %q lacks Authorization or the configured Idempotency-Key", allow)
			}
			if rec.Header().Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed")
			}
		})
	}
	// The actual request still needs a token.
	req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
	req.Header.Set("Origin", "http://localhost:8404")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("GET without token: %d", rec.Code)
	}
}
