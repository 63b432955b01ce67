package authz_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

func TestRotationNewKidOneRefetch(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, []authz.KeyOption{authz.WithRefetchCooldown(time.Hour)})
	if err := v.Keys().Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := iss.Fetches(); got != 1 {
		t.Fatalf("fetches after start = %d", got)
	}
	next := iss.AddKey(t)
	iss.SetSigningKey(next)
	if _, err := v.Validate(ctxT(t), iss.Token(t, nil)); err != nil {
		t.Fatalf("token signed by the new key: %v", err)
	}
	if got := iss.Fetches(); got != 2 {
		t.Errorf("fetches = %d, want exactly one refetch", got)
	}
	if _, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"sub": "auth0|again"})); err != nil {
		t.Fatal(err)
	}
	if got := iss.Fetches(); got != 2 {
		t.Errorf("fetches = %d after a second token, want 2", got)
	}
}

func TestRotationUnknownKidFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	iss.SetDelay(50 * time.Millisecond) // keep the fetch in flight while the flood arrives
	cooldown := 300 * time.Millisecond
	v := newValidator(t, iss, []authz.KeyOption{authz.WithRefetchCooldown(cooldown)})
	if err := v.Keys().Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	attacker := authztest.NewRSAKey(t)
	toks := make([]string, 50)
	for i := range toks {
		toks[i] = authztest.Sign(t, attacker, map[string]any{"alg": "RS256", "kid": fmt.Sprintf("bogus-%d", i)}, iss.DefaultClaims())
	}
	base := iss.Fetches()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[authz.Code]int{}
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Validate(context.Background(), toks[i%len(toks)])
			mu.Lock()
			codes[authz.CodeOf(err)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	allowed := int64(elapsed/cooldown) + 1
	if got := iss.Fetches() - base; got > allowed {
		t.Errorf("fetches = %d in %v, want at most %d (one per cool-down)", got, elapsed, allowed)
	}
	if codes[authz.CodeInvalidToken] != 1000 {
		t.Errorf("codes = %v, want 1000 invalid_token", codes)
	}
}

func TestOutageServesCachedKeys(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	ttl := 100 * time.Millisecond
	v := newValidator(t, iss, []authz.KeyOption{authz.WithTTL(ttl), authz.WithMaxStale(time.Hour), authz.WithRefetchCooldown(10 * time.Millisecond)},
		authz.WithTokenCache(0)) // every request goes to the keys
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := v.Keys().Start(ctx); err != nil {
		t.Fatal(err)
	}
	tok := iss.Token(t, nil)
	iss.SetDown(true)
	time.Sleep(3 * ttl)
	if _, err := v.Validate(ctx, tok); err != nil {
		t.Fatalf("cached keys during outage: %v", err)
	}
	st := v.Keys().State()
	if !st.Stale || st.LastError == nil || st.Keys != 1 || st.Age < ttl {
		t.Errorf("state = %+v, want stale with an error", st)
	}
	if err := v.Keys().Ready(); err != nil {
		t.Errorf("Ready = %v while within max-stale", err)
	}
	iss.SetDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for v.Keys().State().Stale && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := v.Keys().State(); st.Stale || st.LastError != nil {
		t.Errorf("after recovery state = %+v", st)
	}
}

func TestOutageBeyondMaxStale(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, []authz.KeyOption{authz.WithTTL(20 * time.Millisecond), authz.WithMaxStale(60 * time.Millisecond), authz.WithRefetchCooldown(time.Millisecond)})
	tok := iss.Token(t, nil)
	if _, err := v.Validate(ctxT(t), tok); err != nil {
		t.Fatal(err)
	}
	iss.SetDown(true)
	time.Sleep(100 * time.Millisecond)
	if _, err := v.Validate(ctxT(t), tok); !errors.Is(err, authz.ErrKeysUnavailable) {
		t.Errorf("Validate (cached token) = %v, want keys unavailable", err)
	}
	if err := v.Keys().Ready(); !errors.Is(err, authz.ErrKeysUnavailable) {
		t.Errorf("Ready = %v", err)
	}
}

func TestColdStartEndpointDownIs503(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	iss.SetDown(true)
	v := newValidator(t, iss, nil)
	if err := v.Keys().Start(ctxT(t)); err == nil {
		t.Fatal("Start succeeded with the endpoint down")
	}
	if err := v.Keys().Ready(); err == nil {
		t.Error("Ready with no keys")
	}
	e, _ := newEcho(t, v)
	rec := do(e, "GET", "/v1/me", iss.Token(t, nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After; body %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"error":"temporarily_unavailable"`) {
		t.Errorf("body %s", rec.Body)
	}
	iss.SetDown(false)
	time.Sleep(authz.DefaultRefetchCooldown / 1000) // cool-down is 30 s; not waited: Start retries in the background
}

func TestKeyProviderRejectsBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
	}{
		{"5xx with JSON", 503, "application/json", `{"keys":[]}`},
		{"404", 404, "text/plain", "not found"},
		{"not JSON", 200, "text/html", "<html>"},
		{"no keys", 200, "application/json", `{"keys":[]}`},
		{"only unsupported keys", 200, "application/json", `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"e"}]}`},
		{"oversized", 200, "application/json", `{"keys":[` + strings.Repeat(" ", 2<<20) + `]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			p, err := authz.NewKeyProvider(authz.WithJWKSURL(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(ctxT(t)); err == nil {
				t.Fatal("Start accepted a bad answer")
			}
			if st := p.State(); st.Keys != 0 || st.LastError == nil {
				t.Errorf("state = %+v", st)
			}
		})
	}
}

func TestKeyProviderSkipsUnsupportedKeysAndTimesOut(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	mixed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good := strings.TrimPrefix(string(iss.JWKS()), `{"keys":[`)
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},` + good))
	}))
	defer mixed.Close()
	p, err := authz.NewKeyProvider(authz.WithJWKSURL(mixed.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctxT(t)); err != nil || p.State().Keys != 1 {
		t.Fatalf("Start = %v, state %+v", err, p.State())
	}

	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()
	p2, err := authz.NewKeyProvider(authz.WithJWKSURL(hang.URL), authz.WithHTTPClient(&http.Client{Timeout: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p2.Start(ctxT(t)); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("Start = %v after %v, want a timeout", err, time.Since(start))
	}
}

func TestKeyProviderDiscovery(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	reg := prometheus.NewRegistry()
	m, err := authz.NewMetrics(reg, "test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := authz.NewKeyProvider(authz.WithDiscovery(iss.Issuer()), authz.WithKeyMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(p, authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience), authz.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	tok := iss.Token(t, nil)
	for range 3 {
		if _, err := v.Validate(ctxT(t), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(m.CacheCounter("hit")); got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "test_authz_key_fetches_total", "test_authz_key_age_seconds"); err != nil || n != 3 {
		t.Errorf("gathered %d series, err %v", n, err)
	}
}

func TestNewKeyProviderOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []authz.KeyOption
	}{
		{"none", nil},
		{"both", []authz.KeyOption{authz.WithJWKSURL("http://a/jwks"), authz.WithDiscovery("http://a/")}},
		{"relative", []authz.KeyOption{authz.WithJWKSURL("/jwks")}},
		{"bad ttl", []authz.KeyOption{authz.WithJWKSURL("http://a/jwks"), authz.WithTTL(0)}},
		{"nil client", []authz.KeyOption{authz.WithJWKSURL("http://a/jwks"), authz.WithHTTPClient(nil)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := authz.NewKeyProvider(tc.opts...); err == nil {
				t.Error("accepted")
			}
		})
	}
}
