package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/adapters/mgmt"
	"github.com/authmesh/authmesh/services/users/internal/domain"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

const (
	issuer  = "http://localhost:8400/"
	mgmtAud = "http://localhost:8400/api/v2/"
	aliceID = "auth0|6553da60a54af58e29493991"
)

type tokenFunc func(context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// devTenant runs devtenant with a small Management API rate limit and
// counts the 429s it answers.
func devTenant(t *testing.T, limit int) (*Tenant, *atomic.Int32) {
	t.Helper()
	ten, err := tenant.New(tenant.Config{
		Issuer:               issuer,
		TenantFile:           "../../../../deploy/tenant.yaml",
		DevDir:               "../../../../deploy/dev",
		DataDir:              t.TempDir(),
		Logger:               slog.New(slog.DiscardHandler),
		ManagementRateLimit:  limit,
		ManagementRateWindow: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ten.Close() })
	var limited atomic.Int32
	h := ten.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusTooManyRequests {
			limited.Add(1)
		}
	}))
	t.Cleanup(srv.Close)
	tok, err := ten.IssueClientToken("users-service", mgmtAud)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.New(mgmt.Config{
		BaseURL:    srv.URL + "/api/v2/",
		Tokens:     tokenFunc(func(context.Context) (string, error) { return tok, nil }),
		MaxRetries: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	return NewTenant(c), &limited
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func TestTenantAgainstDevtenant(t *testing.T) {
	t.Parallel()
	d, _ := devTenant(t, 1000)
	ctx := t.Context()

	t.Run("get with roles", func(t *testing.T) {
		u, err := d.GetUser(ctx, aliceID)
		if err != nil {
			t.Fatal(err)
		}
		if u.Email != "alice@authmesh.dev" || !slices.Equal(u.Roles, []string{"customer"}) {
			t.Fatalf("alice = %+v", u)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		if _, err := d.GetUser(ctx, "auth0|000000000000000000000000"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("list", func(t *testing.T) {
		p, err := d.ListUsers(ctx, 0, 3)
		if err != nil || p.Total != 4 || len(p.Users) != 3 {
			t.Fatalf("page = %+v, %v", p, err)
		}
	})
	t.Run("block flag", func(t *testing.T) {
		if err := d.SetBlocked(ctx, aliceID, true); err != nil {
			t.Fatal(err)
		}
		u, _ := d.GetUser(ctx, aliceID)
		if !u.Blocked {
			t.Fatal("not blocked")
		}
		if err := d.SetBlocked(ctx, aliceID, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("replace roles", func(t *testing.T) {
		if _, err := d.ReplaceRoles(ctx, aliceID, []string{"admin", "support"}); err != nil {
			t.Fatal(err)
		}
		u, _ := d.GetUser(ctx, aliceID)
		if !slices.Equal(u.Roles, []string{"admin", "support"}) {
			t.Fatalf("roles = %v", u.Roles)
		}
		if _, err := d.ReplaceRoles(ctx, aliceID, []string{"nope"}); !errors.Is(err, domain.ErrValidation) {
			t.Fatalf("unknown role: %v", err)
		}
	})
}

func TestTenantRateLimitIsWaitedOut(t *testing.T) {
	t.Parallel()
	d, limited := devTenant(t, 3)
	// 4 calls (8 requests) against 3 per second: some are answered 429 and retried after
	// the reset, none fails.
	for i := range 4 {
		if _, err := d.GetUser(t.Context(), aliceID); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if limited.Load() == 0 {
		t.Fatal("devtenant never rate-limited: the test proves nothing")
	}
}

// Failures the caller cannot fix (credentials refused even after renewal, no
// token obtainable) are the tenant being unavailable: 503, never 500.
func TestMapErrCredentialFailuresAreUnavailable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"401 after renewal", &mgmt.Error{StatusCode: 401, Err: "Unauthorized", Message: "Invalid token"}, domain.ErrUnavailable},
		{"no token", fmt.Errorf("%w: refused", mgmt.ErrNoToken), domain.ErrUnavailable},
		{"5xx", &mgmt.Error{StatusCode: 502, Err: "Bad Gateway"}, domain.ErrUnavailable},
		{"404", &mgmt.Error{StatusCode: 404, Err: "Not Found"}, domain.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := mapErr(tc.err); !errors.Is(got, tc.want) {
				t.Fatalf("mapErr(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if got := mapErr(&mgmt.Error{StatusCode: 403, Err: "Forbidden"}); errors.Is(got, domain.ErrUnavailable) {
		t.Fatalf("403 (a missing scope on the M2M grant) mapped to unavailable: %v", got)
	}
}
