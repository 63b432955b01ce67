package authz_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// memReplica is a replica with an in-memory replay cache (unit tests only).
func memReplica(t *testing.T, iss *authztest.Issuer, cfg authz.DPoPConfig) *echo.Echo {
	t.Helper()
	cfg.Replay = authz.NewMemoryReplayCache()
	return dpopReplica(t, iss, nil, cfg)
}

// TestDPoPAccepts: what compliant clients send passes (RFC 9449 §4.3 htu
// normalisation, case-insensitive scheme, a query the proof leaves out).
func TestDPoPAccepts(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	e := memReplica(t, iss, authz.DPoPConfig{})
	k := authztest.NewDPoPKey(t)
	tok := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	tests := []struct {
		name, path, htu, scheme, typ string
	}{
		{"plain", "/v1/me", apiOrigin + "/v1/me", "DPoP", ""},
		{"request with a query the proof omits", "/v1/me?page=2", apiOrigin + "/v1/me", "DPoP", ""},
		{"htu with a fragment and query", "/v1/me", apiOrigin + "/v1/me?x=1#f", "DPoP", ""},
		{"default port and host case", "/v1/me", "HTTPS://API.Example.COM:443/v1/me", "DPoP", ""},
		{"percent-encoded unreserved characters", "/v1/me", apiOrigin + "/v1/%6De", "DPoP", ""},
		{"dot-segments", "/v1/me", apiOrigin + "/v1/x/../me", "DPoP", ""},
		{"scheme in lower case", "/v1/me", apiOrigin + "/v1/me", "dpop", ""},
		{"typ with the application/ prefix, any case", "/v1/me", apiOrigin + "/v1/me", "DPoP", "application/DPoP+JWT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hdr authztest.Claims
			if tc.typ != "" {
				hdr = authztest.Claims{"typ": tc.typ}
			}
			p := k.ProofWith(t, hdr, k.ProofClaims("GET", apiOrigin+"/v1/me", tok).With(authztest.Claims{"htu": tc.htu}))
			rec := dpopReq{path: tc.path, auth: []string{tc.scheme + " " + tok}, proofs: []string{p}}.send(e)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), k.JKT()) {
				t.Fatalf("%d %s %s", rec.Code, rec.Body, challenges(rec))
			}
		})
	}
	t.Run("unbound Bearer tokens still pass in mode allowed", func(t *testing.T) {
		t.Parallel()
		if rec := (dpopReq{auth: []string{"Bearer " + iss.Token(t, nil)}}).send(e); rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("no credentials: both schemes offered, no error", func(t *testing.T) {
		t.Parallel()
		rec := dpopReq{}.send(e)
		// Two fields: a client that reads one value (Go's Header.Get, most
		// HTTP libraries) gets contract §5's Bearer challenge unchanged.
		got, want := rec.Header().Values("WWW-Authenticate"), []string{`Bearer realm="authmesh"`, `DPoP realm="authmesh", ` + allAlgs}
		if rec.Code != 401 || !slices.Equal(got, want) {
			t.Fatalf("%d %q, want 401 %q", rec.Code, got, want)
		}
	})
}

// TestDPoPModes: required refuses Bearer, disabled ignores the DPoP scheme
// and still refuses bound tokens as Bearer, and proxies' headers count only
// when trusted.
func TestDPoPModes(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	k := authztest.NewDPoPKey(t)
	bound := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	unbound := iss.Token(t, nil)

	required := memReplica(t, iss, authz.DPoPConfig{Mode: authz.DPoPRequired, Algorithms: []string{"ES256"}})
	rec := dpopReq{auth: []string{"Bearer " + unbound}}.send(required)
	if want := `DPoP realm="authmesh", error="invalid_token", error_description="this API requires a DPoP-bound token and a DPoP proof", algs="ES256"`; rec.Code != 401 || challenges(rec) != want {
		t.Errorf("required, Bearer: %d %q, want 401 %q", rec.Code, challenges(rec), want)
	}
	if rec := (dpopReq{}).send(required); challenges(rec) != `DPoP realm="authmesh", algs="ES256"` {
		t.Errorf("required, nothing: %q", challenges(rec))
	}
	if rec := (dpopReq{auth: []string{"DPoP " + bound}, proofs: []string{k.Proof(t, "GET", apiOrigin+"/v1/me", bound)}}).send(required); rec.Code != 200 {
		t.Errorf("required, DPoP: %d %s", rec.Code, rec.Body)
	}

	disabled := memReplica(t, iss, authz.DPoPConfig{Mode: authz.DPoPDisabled})
	rec = dpopReq{auth: []string{"DPoP " + bound}, proofs: []string{k.Proof(t, "GET", apiOrigin+"/v1/me", bound)}}.send(disabled)
	if rec.Code != 401 || challenges(rec) != `Bearer realm="authmesh"` {
		t.Errorf("disabled, DPoP: %d %q, want 401 without a DPoP challenge", rec.Code, challenges(rec))
	}
	if rec := (dpopReq{auth: []string{"Bearer " + bound}}).send(disabled); rec.Code != 401 || !strings.Contains(rec.Body.String(), "DPoP-bound") {
		t.Errorf("disabled, bound token as Bearer: %d %s, want 401", rec.Code, rec.Body)
	}
	if rec := (dpopReq{path: "/v1/bound-only", auth: []string{"Bearer " + unbound}}).send(disabled); rec.Code != 401 {
		t.Errorf("disabled, a route requiring DPoP: %d, want 401 (fail closed)", rec.Code)
	}

	// Behind a proxy without a configured origin: the forwarded host counts
	// only when trusted.
	for _, trusted := range []bool{false, true} {
		v := newValidator(t, iss, nil)
		dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), TrustForwarded: trusted})
		if err != nil {
			t.Fatal(err)
		}
		e := echo.New()
		reg := authz.NewRegistry()
		e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: v, Registry: reg, DPoP: dp}))
		authz.GET(e, reg, "/v1/me", func(c echo.Context) error { return c.NoContent(200) }, authz.Authenticated().Users())
		req := httptest.NewRequest("GET", "http://10.0.0.7:8402/v1/me", nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "api.example.com")
		req.Header.Set("Authorization", "DPoP "+bound)
		req.Header.Set("DPoP", k.Proof(t, "GET", apiOrigin+"/v1/me", bound))
		rr := httptest.NewRecorder()
		e.ServeHTTP(rr, req)
		if want := map[bool]int{false: 401, true: 200}[trusted]; rr.Code != want {
			t.Errorf("trusted forwarded headers %v: %d, want %d", trusted, rr.Code, want)
		}
	}
}

// TestDPoPNonce: with server nonces, a proof without one, or with a forged
// or expired one, gets 401 use_dpop_nonce and a fresh DPoP-Nonce, which the
// retry carries.
func TestDPoPNonce(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	nonces, err := authz.NewDPoPNonces([]byte(strings.Repeat("k", 32)), 5*60e9)
	if err != nil {
		t.Fatal(err)
	}
	e := memReplica(t, iss, authz.DPoPConfig{Nonces: nonces})
	k := authztest.NewDPoPKey(t)
	tok := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	claims := func(nonce any) authztest.Claims {
		return k.ProofClaims("GET", apiOrigin+"/v1/me", tok).With(authztest.Claims{"nonce": nonce})
	}
	forger, _ := authz.NewDPoPNonces([]byte(strings.Repeat("x", 32)), 5*60e9)
	var nonce string
	for name, n := range map[string]any{"no nonce": nil, "forged nonce": forger.Issue(), "garbage": "abc"} {
		rec := dpopReq{auth: []string{"DPoP " + tok}, proofs: []string{k.ProofWith(t, nil, claims(n))}}.send(e)
		if rec.Code != 401 || !strings.Contains(challenges(rec), `DPoP realm="authmesh", error="use_dpop_nonce"`) {
			t.Fatalf("%s: %d %q", name, rec.Code, challenges(rec))
		}
		if nonce = rec.Header().Get("DPoP-Nonce"); nonce == "" {
			t.Fatalf("%s: no DPoP-Nonce", name)
		}
	}
	if rec := (dpopReq{auth: []string{"DPoP " + tok}, proofs: []string{k.ProofWith(t, nil, claims(nonce))}}).send(e); rec.Code != http.StatusOK {
		t.Fatalf("with the nonce: %d %s", rec.Code, challenges(rec))
	}
}

// TestProofCheckClaims: with the token's claims (the middleware's way), ath
// is checked against the hash the Validator took, and the key binding comes
// from the claims: claims of another token, of an unbound token, or claims
// without the token they belong to refuse the proof.
func TestProofCheckClaims(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, nil)
	k := authztest.NewDPoPKey(t)
	tok := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	other := iss.Token(t, authztest.Claims{"cnf": k.Cnf(), "sub": "auth0|other"})
	unbound := iss.Token(t, nil)
	claims := func(tok string) *authz.Claims {
		c, err := v.Validate(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const uri = "https://api.example.com/v1/me"
	tests := []struct {
		name  string
		proof string
		chk   authz.ProofCheck
		code  authz.Code
	}{
		{"the token's claims", k.Proof(t, "GET", uri, tok), authz.ProofCheck{AccessToken: tok, Claims: claims(tok)}, ""},
		{"claims of another token", k.Proof(t, "GET", uri, tok), authz.ProofCheck{AccessToken: tok, Claims: claims(other)}, authz.CodeInvalidToken},
		{"proof for the other token", k.Proof(t, "GET", uri, other), authz.ProofCheck{AccessToken: tok, Claims: claims(tok)}, authz.CodeInvalidToken},
		{"claims of an unbound token", k.Proof(t, "GET", uri, unbound), authz.ProofCheck{AccessToken: unbound, Claims: claims(unbound)}, authz.CodeInvalidToken},
		{"claims without their token", k.Proof(t, "GET", uri, ""), authz.ProofCheck{Claims: claims(tok)}, authz.CodeInvalidToken},
		{"claims and a JKT of another key", k.Proof(t, "GET", uri, tok), authz.ProofCheck{AccessToken: tok, Claims: claims(tok), JKT: authztest.NewDPoPKey(t).JKT()}, authz.CodeInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
			if err != nil {
				t.Fatal(err)
			}
			tc.chk.Method, tc.chk.URI = "GET", uri
			_, err = dp.Verify(t.Context(), tc.proof, tc.chk)
			if got := authz.CodeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}
