package flows

import (
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestCORS drives CORS through the three real services: a preflight from the
// SPA's origin (the default <P>CORS_ORIGINS) without a token is answered 204
// with the origin, its method and the Authorization header allowed; a foreign
// origin gets no CORS header at all, on a preflight or on a real request.
func TestCORS(t *testing.T) {
	setup(t)
	const spa, foreign = "http://localhost:8404", "http://evil.example"
	tok := api.Token(t, apiclient.Alice)
	for _, rt := range []struct {
		svc, method, path string
		idempotencyKey    bool // orders alone takes Idempotency-Key (platform.Options.CORSAllowHeaders)
	}{
		{"users", http.MethodPatch, "/v1/me", false},
		{"orders", http.MethodPost, "/v1/orders", true},
		{"billing", http.MethodPost, "/v1/invoices/inv_x/pay", false},
	} {
		t.Run(rt.svc, func(t *testing.T) {
			preflight := func(origin string) apiclient.Response {
				return api.Call(t, http.MethodOptions, rt.svc, rt.path, "", nil,
					"Origin", origin, "Access-Control-Request-Method", rt.method,
					"Access-Control-Request-Headers", "authorization,content-type")
			}
			r := preflight(spa)
			h := r.Header
			if r.Status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != spa {
				t.Fatalf("preflight from %s: %d, Allow-Origin %q; want 204 and the origin", spa, r.Status, h.Get("Access-Control-Allow-Origin"))
			}
			if !containsFold(h.Values("Access-Control-Allow-Headers"), "authorization") ||
				!containsFold(h.Values("Access-Control-Allow-Methods"), rt.method) {
				t.Fatalf("preflight allows headers %q and methods %q; want Authorization and %s",
					h.Values("Access-Control-Allow-Headers"), h.Values("Access-Control-Allow-Methods"), rt.method)
			}
			if got := containsFold(h.Values("Access-Control-Allow-Headers"), "idempotency-key"); got != rt.idempotencyKey {
				t.Errorf("preflight allows Idempotency-Key: %v, want %v", got, rt.idempotencyKey)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("credentials allowed by default: %q", h.Get("Access-Control-Allow-Credentials"))
			}
			if hs := corsHeaders(preflight(foreign).Header); len(hs) > 0 {
				t.Errorf("preflight from %s got CORS headers %v", foreign, hs)
			}
			get := api.Call(t, http.MethodGet, rt.svc, "/readyz", tok, nil, "Origin", foreign)
			if hs := corsHeaders(get.Header); len(hs) > 0 {
				t.Errorf("request from %s got CORS headers %v", foreign, hs)
			}
			if got := api.Call(t, http.MethodGet, rt.svc, "/readyz", tok, nil, "Origin", spa).Header.Get("Access-Control-Allow-Origin"); got != spa {
				t.Errorf("request from %s: Allow-Origin %q", spa, got)
			}
		})
	}
}

func containsFold(values []string, want string) bool {
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), want) {
				return true
			}
		}
	}
	return false
}

// corsHeaders lists the Access-Control-* headers of h.
func corsHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out = append(out, k)
		}
	}
	return out
}
