package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// fakeTenant answers like the Management API with Auth0's documented shapes.
type fakeTenant struct {
	mu        sync.Mutex
	users     map[string]*User
	roles     []Role
	userRoles map[string][]string
	requests  []string // method + escaped path (+ query)
}

func newFakeTenant() *fakeTenant {
	return &fakeTenant{
		users: map[string]*User{
			"auth0|aaa": {UserID: "auth0|aaa", Email: "alice@authmesh.dev", Name: "Alice"},
			"auth0|bbb": {UserID: "auth0|bbb", Email: "bob@authmesh.dev", Name: "Bob"},
		},
		roles:     []Role{{ID: "rol_1", Name: "customer"}, {ID: "rol_2", Name: "support"}},
		userRoles: map[string][]string{"auth0|aaa": {"rol_1"}},
	}
}

func auth0Error(w http.ResponseWriter, status int, msg, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "error": http.StatusText(status), "message": msg, "errorCode": code})
}

func (f *fakeTenant) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v2/users", func(w http.ResponseWriter, r *http.Request) {
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
		ids := make([]string, 0, len(f.users))
		for id := range f.users {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		var out []User
		for i, id := range ids {
			if i >= page*per && i < (page+1)*per {
				out = append(out, *f.users[id])
			}
		}
		if r.URL.Query().Get("include_totals") == "true" {
			writeJSON(w, map[string]any{"start": page * per, "limit": per, "length": len(out), "total": len(ids), "users": out})
			return
		}
		writeJSON(w, out)
	})
	// user is the path's user, or answers 404.
	user := func(w http.ResponseWriter, r *http.Request) (*User, bool) {
		u, ok := f.users[r.PathValue("id")]
		if !ok {
			auth0Error(w, 404, "The user does not exist.", "inexistent_user")
		}
		return u, ok
	}
	mux.HandleFunc("GET /api/v2/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if u, ok := user(w, r); ok {
			writeJSON(w, u)
		}
	})
	mux.HandleFunc("PATCH /api/v2/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		u, ok := user(w, r)
		if !ok {
			return
		}
		if err := json.NewDecoder(r.Body).Decode(u); err != nil {
			auth0Error(w, 400, "Payload validation error", "invalid_body")
			return
		}
		writeJSON(w, u)
	})
	mux.HandleFunc("GET /api/v2/roles", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, f.roles) })
	mux.HandleFunc("GET /api/v2/users/{id}/roles", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := user(w, r); !ok {
			return
		}
		out := []Role{}
		for _, role := range f.roles {
			if slices.Contains(f.userRoles[r.PathValue("id")], role.ID) {
				out = append(out, role)
			}
		}
		writeJSON(w, out)
	})
	change := func(w http.ResponseWriter, r *http.Request, add bool) {
		id := r.PathValue("id")
		var body struct{ Roles []string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Roles) == 0 {
			auth0Error(w, 400, "Payload validation error", "invalid_body")
			return
		}
		cur := f.userRoles[id]
		for _, rid := range body.Roles {
			if add && !slices.Contains(cur, rid) {
				cur = append(cur, rid)
			}
			if !add {
				cur = slices.DeleteFunc(cur, func(s string) bool { return s == rid })
			}
		}
		f.userRoles[id] = cur
		w.WriteHeader(http.StatusNoContent)
	}
	mux.HandleFunc("POST /api/v2/users/{id}/roles", func(w http.ResponseWriter, r *http.Request) { change(w, r, true) })
	mux.HandleFunc("DELETE /api/v2/users/{id}/roles", func(w http.ResponseWriter, r *http.Request) { change(w, r, false) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer mgmt-token" {
			auth0Error(w, 401, "Missing authentication", "")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests = append(f.requests, r.Method+" "+r.URL.EscapedPath())
		mux.ServeHTTP(w, r)
	})
}

func newTestClient(t *testing.T, h http.Handler, mod func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := Config{BaseURL: srv.URL + "/api/v2", Tokens: staticToken("mgmt-token"), Backoff: time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientAgainstAuth0Shapes(t *testing.T) {
	t.Parallel()
	f := newFakeTenant()
	c := newTestClient(t, f.handler(t), nil)
	ctx := t.Context()

	t.Run("get escapes the user id", func(t *testing.T) {
		u, err := c.GetUser(ctx, "auth0|aaa")
		if err != nil {
			t.Fatal(err)
		}
		if u.Email != "alice@authmesh.dev" {
			t.Fatalf("email = %q", u.Email)
		}
		f.mu.Lock()
		last := f.requests[len(f.requests)-1]
		f.mu.Unlock()
		if last != "GET /api/v2/users/auth0%7Caaa" {
			t.Fatalf("request = %q, want the id escaped as auth0%%7Caaa", last)
		}
	})
	t.Run("unknown user is a typed 404", func(t *testing.T) {
		_, err := c.GetUser(ctx, "auth0|nope")
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want *Error 404", err)
		}
		if e.ErrorCode != "inexistent_user" || e.Message != "The user does not exist." {
			t.Fatalf("decoded %+v", e)
		}
	})
	t.Run("list with totals", func(t *testing.T) {
		l, err := c.ListUsers(ctx, ListUsersParams{Page: 0, PerPage: 1, IncludeTotals: true})
		if err != nil {
			t.Fatal(err)
		}
		if l.Total != 2 || len(l.Users) != 1 || l.Users[0].UserID != "auth0|aaa" {
			t.Fatalf("list = %+v", l)
		}
		l, err = c.ListUsers(ctx, ListUsersParams{Page: 1, PerPage: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Users) != 1 || l.Users[0].UserID != "auth0|bbb" {
			t.Fatalf("bare-array list = %+v", l)
		}
	})
	t.Run("patch blocked", func(t *testing.T) {
		yes := true
		u, err := c.UpdateUser(ctx, "auth0|bbb", UserUpdate{Blocked: &yes})
		if err != nil {
			t.Fatal(err)
		}
		if !u.Blocked {
			t.Fatal("not blocked after PATCH")
		}
	})
	t.Run("roles assign and remove", func(t *testing.T) {
		if err := c.AssignUserRoles(ctx, "auth0|bbb", []string{"rol_2"}); err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveUserRoles(ctx, "auth0|aaa", []string{"rol_1"}); err != nil {
			t.Fatal(err)
		}
		got, err := c.GetUserRoles(ctx, "auth0|bbb")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Name != "support" {
			t.Fatalf("bob's roles = %+v", got)
		}
		got, err = c.GetUserRoles(ctx, "auth0|aaa")
		if err != nil || len(got) != 0 {
			t.Fatalf("alice's roles = %+v, %v", got, err)
		}
		all, err := c.ListRoles(ctx)
		if err != nil || len(all) != 2 {
			t.Fatalf("roles = %+v, %v", all, err)
		}
	})
}

func TestClientRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		failures  int // answers before the good one
		status    int
		reset     func() string
		retries   int
		wantCalls int32
		wantErr   error
		minWait   time.Duration
	}{
		{name: "429 honours x-ratelimit-reset", failures: 1, status: 429, reset: func() string { return strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10) }, retries: 3, wantCalls: 2, minWait: 10 * time.Millisecond},
		{name: "429 with reset too far away gives up", failures: 1, status: 429, reset: func() string { return strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) }, retries: 3, wantCalls: 1, wantErr: ErrRateLimited},
		{name: "5xx retried", failures: 2, status: 503, retries: 3, wantCalls: 3},
		{name: "5xx retries bounded", failures: 5, status: 502, retries: 2, wantCalls: 3, wantErr: &Error{StatusCode: 502}},
		{name: "4xx not retried", failures: 1, status: 400, retries: 3, wantCalls: 1, wantErr: ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if int(n) <= tt.failures {
					if tt.reset != nil {
						w.Header().Set("X-Ratelimit-Limit", "10")
						w.Header().Set("X-Ratelimit-Remaining", "0")
						w.Header().Set("X-Ratelimit-Reset", tt.reset())
					}
					auth0Error(w, tt.status, "nope", "too_many_requests")
					return
				}
				_, _ = io.WriteString(w, `{"user_id":"auth0|aaa"}`)
			})
			c := newTestClient(t, h, func(c *Config) { c.MaxRetries = tt.retries; c.MaxRetryWait = 3 * time.Second })
			start := time.Now()
			_, err := c.GetUser(t.Context(), "auth0|aaa")
			if tt.wantErr == nil && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Fatalf("calls = %d, want %d", got, tt.wantCalls)
			}
			if time.Since(start) < tt.minWait {
				t.Fatalf("retried after %v, before the rate-limit reset", time.Since(start))
			}
		})
	}
}

func TestClientRetryStopsWithContext(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(5*time.Second).Unix(), 10))
		auth0Error(w, 429, "Too many requests", "too_many_requests")
	})
	c := newTestClient(t, h, func(c *Config) { c.MaxRetryWait = 10 * time.Second })
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.GetUser(ctx, "auth0|aaa")
	if !errors.Is(err, ErrRateLimited) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("waited past the context deadline")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no base", Config{Tokens: staticToken("x")}},
		{"relative base", Config{BaseURL: "/api/v2/", Tokens: staticToken("x")}},
		{"no tokens", Config{BaseURL: "http://localhost:8400/api/v2/"}},
		{"negative retries", Config{BaseURL: "http://localhost:8400/api/v2/", Tokens: staticToken("x"), MaxRetries: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

// rotatingTokens hands out "tok-1", "tok-2", ... : a new one only after the
// current one was invalidated, as m2m.ClientCredentials does.
type rotatingTokens struct {
	mu          sync.Mutex
	n           int
	invalidated []string
}

func (r *rotatingTokens) Token(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.n = 1
	}
	return "tok-" + strconv.Itoa(r.n), nil
}

func (r *rotatingTokens) Invalidate(tok string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.invalidated = append(r.invalidated, tok)
	if tok == "tok-"+strconv.Itoa(r.n) {
		r.n++
	}
}

// TestClientRenewsARefusedToken: after a signing-key revocation the cached
// Management API token is refused with 401; the client drops it and asks
// once more with a fresh one. A second 401 is the answer (no loop).
func TestClientRenewsARefusedToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		accepted string // the token the tenant takes; "" = none
		wantErr  bool
		wantSent []string
	}{
		{"fresh token accepted", "tok-2", false, []string{"tok-1", "tok-2"}},
		{"fresh token refused too", "", true, []string{"tok-1", "tok-2"}},
		{"current token accepted", "tok-1", false, []string{"tok-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu   sync.Mutex
				sent []string
			)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tok := r.Header.Get("Authorization")[len("Bearer "):]
				mu.Lock()
				sent = append(sent, tok)
				mu.Unlock()
				if tok != tc.accepted {
					auth0Error(w, 401, "Invalid token", "")
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"user_id":"auth0|aaa","email":"alice@authmesh.dev"}`)
			})
			tokens := &rotatingTokens{}
			c := newTestClient(t, h, func(cfg *Config) { cfg.Tokens = tokens })
			u, err := c.GetUser(t.Context(), "auth0|aaa")
			switch {
			case tc.wantErr && !errors.Is(err, ErrUnauthorized):
				t.Fatalf("err = %v, want the second 401", err)
			case !tc.wantErr && (err != nil || u.Email != "alice@authmesh.dev"):
				t.Fatalf("GetUser = %+v, %v", u, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(sent, tc.wantSent) {
				t.Fatalf("tokens sent %v, want %v", sent, tc.wantSent)
			}
			if want := tc.wantSent[:len(tc.wantSent)-1]; !slices.Equal(tokens.invalidated, want) {
				t.Fatalf("invalidated %v, want %v", tokens.invalidated, want)
			}
		})
	}
}

// A token source that cannot renew (no Invalidate) gets the 401 at once.
func TestClientWithoutInvalidatorDoesNotRetry401(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		auth0Error(w, 401, "Invalid token", "")
	})
	c := newTestClient(t, h, nil)
	if _, err := c.GetUser(t.Context(), "auth0|aaa"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want 401", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

// A token that cannot be had is ErrNoToken, so the service answers 503.
func TestClientTokenFailureIsErrNoToken(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, http.NotFoundHandler(), func(cfg *Config) {
		cfg.Tokens = failingTokens{}
	})
	if _, err := c.GetUser(t.Context(), "auth0|aaa"); !errors.Is(err, ErrNoToken) {
		t.Fatalf("err = %v, want ErrNoToken", err)
	}
}

type failingTokens struct{}

func (failingTokens) Token(context.Context) (string, error) {
	return "", errors.New("token endpoint: connection refused")
}
