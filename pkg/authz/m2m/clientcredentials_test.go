package m2m

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// fakeTenant is an Auth0-shaped /oauth/token endpoint.
type fakeTenant struct {
	srv      *httptest.Server
	fetches  atomic.Int32
	failures atomic.Int32 // answer 503 to this many requests first
	status   atomic.Int32 // if set, always answer this status
	delay    time.Duration
	lifetime int
}

const testSecret = "s3cr3t-client-secret"

func newFakeTenant(t *testing.T, lifetime int) *fakeTenant {
	f := &fakeTenant{lifetime: lifetime}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.fetches.Add(1)
		time.Sleep(f.delay)
		_ = r.ParseForm()
		if r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("audience") != "https://api.authmesh.dev" ||
			r.Form.Get("client_id") != "orders-service" || r.Form.Get("client_secret") != testSecret {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"error":"invalid_request","error_description":"bad form %v"}`, r.Form)
			return
		}
		if s := f.status.Load(); s != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(s))
			// A hostile or buggy tenant echoing the secret must not leak it.
			_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":"Unknown client secret %s"}`, testSecret)
			return
		}
		if f.failures.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":%d}`, n, f.lifetime)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func newSource(t *testing.T, f *fakeTenant, now func() time.Time) *ClientCredentials {
	t.Helper()
	cfg := Config{
		TokenURL: f.srv.URL + "/oauth/token", ClientID: "orders-service", ClientSecret: testSecret,
		Audience: "https://api.authmesh.dev", MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
	}
	cfg.now = now
	ts, err := NewClientCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestClientCredentialsSingleFlight(t *testing.T) {
	t.Parallel()
	f := newFakeTenant(t, 86400)
	f.delay = 50 * time.Millisecond
	ts := newSource(t, f, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			tok, err := ts.Token(context.Background())
			if err == nil && tok != "tok-1" {
				err = fmt.Errorf("token %q", tok)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := f.fetches.Load(); n != 1 {
		t.Fatalf("%d token requests for 100 concurrent callers, want 1", n)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestClientCredentialsRefreshesBeforeExpiry(t *testing.T) {
	t.Parallel()
	f := newFakeTenant(t, 100)
	clock := &fakeClock{t: time.Now()}
	ts := newSource(t, f, clock.now)
	ctx := context.Background()

	steps := []struct {
		advance   time.Duration
		want      string
		wantFetch int32
	}{
		{0, "tok-1", 1},
		{70 * time.Second, "tok-1", 1}, // 70 %: cached
		{12 * time.Second, "tok-1", 2}, // 82 %: still valid, refreshed in the background
		{0, "tok-2", 2},
		{79 * time.Second, "tok-2", 2}, // 79 % of the new token's life
	}
	for i, s := range steps {
		clock.add(s.advance)
		tok, err := ts.Token(ctx)
		if err != nil || tok != s.want {
			t.Fatalf("step %d: %q, %v; want %q", i, tok, err, s.want)
		}
		authztest.Eventually(t, 2*time.Second, func() bool { return f.fetches.Load() == s.wantFetch }, fmt.Sprintf("step %d: %d fetches", i, s.wantFetch))
		// The refresh is done once the new token is stored.
		authztest.Eventually(t, 2*time.Second, func() bool {
			ts.mu.RLock()
			defer ts.mu.RUnlock()
			return ts.token == fmt.Sprintf("tok-%d", s.wantFetch)
		}, "refresh stored")
	}
}

func TestClientCredentialsRetriesWhenTenantDown(t *testing.T) {
	t.Parallel()
	f := newFakeTenant(t, 3600)
	f.failures.Store(3)
	ts := newSource(t, f, nil)
	tok, err := ts.Token(context.Background())
	if err != nil || tok != "tok-4" {
		t.Fatalf("%q, %v", tok, err)
	}
	if n := f.fetches.Load(); n != 4 {
		t.Fatalf("%d requests, want 3 failures + 1 success", n)
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		setup       func(*fakeTenant)
		wantFetches int32
		wantIn      string
	}{
		{"bad credentials are not retried", func(f *fakeTenant) { f.status.Store(401) }, 1, "status 401 invalid_client"},
		{"tenant down gives up after MaxAttempts", func(f *fakeTenant) { f.failures.Store(100) }, 5, "status 503"},
		{"throttled is retried", func(f *fakeTenant) { f.status.Store(429) }, 5, "status 429"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeTenant(t, 3600)
			tc.setup(f)
			_, err := newSource(t, f, nil).Token(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
			if !strings.Contains(err.Error(), tc.wantIn) || !strings.Contains(err.Error(), "orders-service") {
				t.Fatalf("error %q lacks %q", err, tc.wantIn)
			}
			if n := f.fetches.Load(); n != tc.wantFetches {
				t.Fatalf("%d requests, want %d", n, tc.wantFetches)
			}
		})
	}
}

func TestNewClientCredentialsValidates(t *testing.T) {
	t.Parallel()
	good := Config{TokenURL: "https://t/oauth/token", ClientID: "c", ClientSecret: testSecret, Audience: "a"}
	for name, mut := range map[string]func(*Config){
		"relative url":  func(c *Config) { c.TokenURL = "/oauth/token" },
		"no client":     func(c *Config) { c.ClientID = "" },
		"no secret":     func(c *Config) { c.ClientSecret = "" },
		"no audience":   func(c *Config) { c.Audience = "" },
		"refresh at 1":  func(c *Config) { c.RefreshAfter = 1 },
		"backoff order": func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := good
			mut(&cfg)
			if _, err := NewClientCredentials(cfg); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), cfg.ClientSecret) && cfg.ClientSecret != "" {
				t.Fatal("error leaks the secret")
			}
		})
	}
	if _, err := NewClientCredentials(good); err != nil {
		t.Fatal(err)
	}
}

// TestClientCredentialsInvalidate: a token a receiver refused (its key was
// revoked) is dropped, and only that token: a stale refusal arriving after a
// fresh fetch must not discard the fresh token.
func TestClientCredentialsInvalidate(t *testing.T) {
	t.Parallel()
	f := newFakeTenant(t, 86400)
	ts := newSource(t, f, nil)
	ctx := context.Background()
	first, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts.Invalidate(first)
	second, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || f.fetches.Load() != 2 {
		t.Fatalf("after Invalidate: token %q (first %q), %d fetches; want a new token from a second fetch", second, first, f.fetches.Load())
	}
	ts.Invalidate(first) // late refusal of the old token
	if third, _ := ts.Token(ctx); third != second || f.fetches.Load() != 2 {
		t.Errorf("a stale Invalidate discarded the fresh token: %q, %d fetches", third, f.fetches.Load())
	}
}
