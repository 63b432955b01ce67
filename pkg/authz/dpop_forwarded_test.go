package authz_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestDPoPProofFromContext: behind the middleware, the proof it verified is
// in the request's context (to forward to the Transaction Token Service);
// with a Bearer token, or claims put in a context by hand, there is none.
func TestDPoPProofFromContext(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), Origin: apiOrigin})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: newValidator(t, iss, nil), Registry: reg, DPoP: dp}))
	var got string
	var ok bool
	authz.GET(e, reg, "/v1/me", func(c echo.Context) error {
		got, ok = authz.DPoPProofFromContext(c.Request().Context())
		return c.NoContent(http.StatusNoContent)
	}, authz.RequireAll("read:profile").Users())

	k := authztest.NewDPoPKey(t)
	bound := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	proof := k.Proof(t, "GET", apiOrigin+"/v1/me", bound)
	req := httptest.NewRequest("GET", "/v1/me", nil)
	req.Header.Set("Authorization", "DPoP "+bound)
	req.Header.Set("DPoP", proof)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || !ok || got != proof {
		t.Fatalf("DPoP request: %d, proof in context %v (same as sent: %v)", rec.Code, ok, got == proof)
	}

	req = httptest.NewRequest("GET", "/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+iss.Token(t, nil))
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || ok || got != "" {
		t.Fatalf("Bearer request: %d, proof in context %v", rec.Code, ok)
	}

	c := &authz.Claims{JKT: k.JKT()}
	if _, ok := authz.DPoPProofFromContext(authz.WithClaims(t.Context(), c, bound)); ok {
		t.Fatal("claims put in a context by hand carry a proof")
	}
}

// TestForwardedProofVerifier: a forwarded proof is accepted only when the
// bound key signed it for this token, recently; errors never quote it.
func TestForwardedProofVerifier(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	k := authztest.NewDPoPKey(t)
	other := authztest.NewDPoPKey(t)
	tok := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	tok2 := iss.Token(t, authztest.Claims{"cnf": k.Cnf(), "jti": "another"})
	now := time.Now()
	v, err := authz.NewForwardedProofVerifier(authz.ForwardedProofConfig{MaxAge: time.Minute, FutureSkew: 5 * time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if v.Window() != time.Minute+5*time.Second || v.MaxAge() != time.Minute {
		t.Fatalf("window %v, max age %v", v.Window(), v.MaxAge())
	}

	claims := func(over authztest.Claims) authztest.Claims {
		return k.ProofClaims("POST", apiOrigin+"/v1/orders", tok).With(over)
	}
	good := k.ProofWith(t, nil, claims(nil))
	p, err := v.Verify(good, k.JKT(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.JKT != k.JKT() || p.JTI == "" || p.IssuedAt.Unix() != now.Unix() {
		t.Fatalf("proof %+v", p)
	}
	// Any htm and htu: the edge compared them with its request.
	if _, err := v.Verify(k.ProofWith(t, nil, claims(authztest.Claims{"htm": "GET", "htu": "https://elsewhere.example/x"})), k.JKT(), tok); err != nil {
		t.Fatalf("another request's htu: %v", err)
	}

	sig := good[strings.LastIndexByte(good, '.')+1:]
	flipped := good[:len(good)-len(sig)] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, sig[:1]) + sig[1:]
	for _, tc := range []struct {
		name, proof, jkt, token string
		code                    authz.Code
		reason                  string
	}{
		{"no proof", "", k.JKT(), tok, authz.CodeInvalidDPoPProof, "missing_proof"},
		{"not a JWS", "abc.def", k.JKT(), tok, authz.CodeInvalidDPoPProof, "malformed"},
		{"another access token (ath)", good, k.JKT(), tok2, authz.CodeInvalidToken, "dpop_ath"},
		{"no ath", k.ProofWith(t, nil, claims(authztest.Claims{"ath": nil})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "no_ath"},
		{"key not the token's cnf.jkt", other.ProofWith(t, nil, claims(nil)), k.JKT(), tok, authz.CodeInvalidToken, "dpop_binding"},
		{"no jkt to check against", good, "", tok, authz.CodeInvalidToken, "dpop_binding"},
		{"no token to check against", good, k.JKT(), "", authz.CodeInvalidToken, "dpop_binding"},
		{"stale", k.ProofWith(t, nil, claims(authztest.Claims{"iat": now.Add(-61 * time.Second).Unix()})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "stale"},
		{"future", k.ProofWith(t, nil, claims(authztest.Claims{"iat": now.Add(10 * time.Second).Unix()})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "future"},
		{"no iat", k.ProofWith(t, nil, claims(authztest.Claims{"iat": nil})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "missing_claim"},
		{"no htu", k.ProofWith(t, nil, claims(authztest.Claims{"htu": nil})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "missing_claim"},
		{"no jti", k.ProofWith(t, nil, claims(authztest.Claims{"jti": nil})), k.JKT(), tok, authz.CodeInvalidDPoPProof, "no_jti"},
		{"bad signature", flipped, k.JKT(), tok, authz.CodeInvalidDPoPProof, "bad_signature"},
		{"typ JWT", k.ProofWith(t, authztest.Claims{"typ": "JWT"}, claims(nil)), k.JKT(), tok, authz.CodeInvalidDPoPProof, "typ"},
		{"private jwk", k.ProofWith(t, authztest.Claims{"jwk": k.PrivateJWK()}, claims(nil)), k.JKT(), tok, authz.CodeInvalidDPoPProof, "private_jwk"},
		{"HS256 with an oct jwk", authztest.HS256Proof(t, []byte("0123456789abcdef0123456789abcdef"), claims(nil)), k.JKT(), tok, authz.CodeInvalidDPoPProof, "private_jwk"},
		{"HS256", k.ProofWith(t, authztest.Claims{"alg": "HS256"}, claims(nil)), k.JKT(), tok, authz.CodeInvalidDPoPProof, "alg"},
		{"too large", strings.Repeat("a", authz.MaxDPoPProofBytes+1), k.JKT(), tok, authz.CodeInvalidDPoPProof, "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.proof, tc.jkt, tc.token)
			var ae *authz.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || ae.Reason != tc.reason {
				t.Fatalf("got %v, want %s (%s)", err, tc.code, tc.reason)
			}
			for _, s := range []string{tc.proof, tc.token} {
				if len(s) > 8 && strings.Contains(err.Error(), s) {
					t.Fatal("the error quotes the proof or the token")
				}
			}
		})
	}
}

func TestForwardedProofVerifierConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]authz.ForwardedProofConfig{
		"symmetric alg":  {Algorithms: []string{"HS256"}},
		"max age > 10m":  {MaxAge: time.Hour},
		"negative skew":  {FutureSkew: -time.Second},
		"skew above 5 m": {FutureSkew: 6 * time.Minute},
	} {
		if _, err := authz.NewForwardedProofVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	v, err := authz.NewForwardedProofVerifier(authz.ForwardedProofConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Window() != authz.DefaultDPoPMaxAge+authz.DefaultDPoPFutureSkew {
		t.Fatalf("default window %v", v.Window())
	}
}
