package authz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

const apiOrigin = "https://api.example.com"

// sharedReplayBucket runs an in-process nats-server and returns a bucket
// configured as pkg/platform configures each service's replay bucket.
func sharedReplayBucket(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	js := natstest.JetStream(t)
	kv, err := js.CreateKeyValue(ctxT(t), natsauth.DPoPReplayBucket("test_dpop_jti", ttl, 1))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// dpopReplica is one replica of a service: its own validator and DPoP
// verifier, the replay bucket shared.
func dpopReplica(t testing.TB, iss *authztest.Issuer, kv jetstream.KeyValue, cfg authz.DPoPConfig) *echo.Echo {
	t.Helper()
	v := newValidator(t, iss, nil)
	if cfg.Replay == nil {
		rc, err := natsauth.NewDPoPReplayCache(kv, authz.DefaultDPoPMaxAge+authz.DefaultDPoPFutureSkew)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Replay = rc
	}
	if cfg.Origin == "" {
		cfg.Origin = apiOrigin
	}
	dp, err := authz.NewDPoP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: v, Registry: reg, DPoP: dp}))
	ok := func(c echo.Context) error {
		cl, _ := authz.ClaimsFromEcho(c)
		jkt, _ := authz.DPoPVerifiedFromContext(c.Request().Context())
		return c.JSON(http.StatusOK, map[string]string{"sub": cl.Subject, "jkt": jkt})
	}
	authz.GET(e, reg, "/v1/me", ok, authz.RequireAll("read:profile").Users())
	authz.POST(e, reg, "/v1/orders", ok, authz.RequireAll("read:profile").Users())
	authz.GET(e, reg, "/v1/bound-only", ok, authz.RequireAll("read:profile").Users().RequireDPoP())
	return e
}

// dpopReq is one request: Authorization values, DPoP header values, method, path.
type dpopReq struct {
	method, path string
	auth, proofs []string
}

func (r dpopReq) send(e *echo.Echo) *httptest.ResponseRecorder {
	method, path := r.method, r.path
	if method == "" {
		method = http.MethodGet
	}
	if path == "" {
		path = "/v1/me"
	}
	req := httptest.NewRequest(method, path, nil)
	for _, a := range r.auth {
		req.Header.Add("Authorization", a)
	}
	for _, p := range r.proofs {
		req.Header.Add("DPoP", p)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

const allAlgs = `algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA"`

// TestDPoPAttacks tries every way RFC 9449 §4.3 and §7 say a request must
// fail, against two replicas sharing one NATS KV replay bucket: each case
// is answered 401 (400 for two Authorization headers) with the RFC 9449
// challenge, and the token never appears in the answer.
func TestDPoPAttacks(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	kv := sharedReplayBucket(t, authz.DefaultDPoPMaxAge+authz.DefaultDPoPFutureSkew)
	a := dpopReplica(t, iss, kv, authz.DPoPConfig{})
	b := dpopReplica(t, iss, kv, authz.DPoPConfig{})
	k := authztest.NewDPoPKey(t)
	other := authztest.NewDPoPKey(t)
	bound := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
	boundToOther := iss.Token(t, authztest.Claims{"cnf": other.Cnf()})
	unbound := iss.Token(t, nil)
	uri := apiOrigin + "/v1/me"
	dpop := func(tok string) []string { return []string{"DPoP " + tok} }
	claims := func(over authztest.Claims) authztest.Claims {
		return k.ProofClaims("GET", uri, bound).With(over)
	}
	proof := func(over authztest.Claims) string { return k.ProofWith(t, nil, claims(over)) }
	withHeader := func(hdr authztest.Claims) string { return k.ProofWith(t, hdr, claims(nil)) }
	good := k.Proof(t, "GET", uri, bound)
	tampered := func() string {
		p := strings.Split(k.Proof(t, "GET", uri, bound), ".")
		p[1] = authztest.Encode(t, claims(authztest.Claims{"htm": "POST"}))
		return strings.Join(p, ".")
	}()
	rsaKey := authztest.NewRSAKey(t)

	const (
		badProofCh = `DPoP realm="authmesh", error="invalid_dpop_proof", error_description="`
		badTokenCh = `DPoP realm="authmesh", error="invalid_token", error_description="`
	)
	tests := []struct {
		name   string
		req    dpopReq
		status int
		code   string
		// wwwAuth is a prefix of the first challenge after the Bearer one.
		wwwAuth string
	}{
		{"missing proof", dpopReq{auth: dpop(bound)}, 401, "invalid_dpop_proof", badProofCh + "a DPoP proof is required"},
		{"two proof headers", dpopReq{auth: dpop(bound), proofs: []string{good, k.Proof(t, "GET", uri, bound)}}, 401, "invalid_dpop_proof", badProofCh + "exactly one"},
		{"comma-joined proofs", dpopReq{auth: dpop(bound), proofs: []string{good + "," + good}}, 401, "invalid_dpop_proof", badProofCh},
		{"not a JWS", dpopReq{auth: dpop(bound), proofs: []string{"abc"}}, 401, "invalid_dpop_proof", badProofCh},
		{"typ JWT", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"typ": "JWT"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's typ"},
		{"no typ", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"typ": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's typ"},
		{"alg none", dpopReq{auth: dpop(bound), proofs: []string{authztest.Encode(t, authztest.Claims{"typ": "dpop+jwt", "alg": "none", "jwk": k.JWK()}) + "." + authztest.Encode(t, claims(nil)) + "."}}, 401, "invalid_dpop_proof", badProofCh},
		{"symmetric alg HS256 with an oct jwk", dpopReq{auth: dpop(bound), proofs: []string{authztest.HS256Proof(t, []byte("0123456789abcdef0123456789abcdef"), claims(nil))}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's jwk must be a public key"},
		{"private jwk", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"jwk": k.PrivateJWK()})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's jwk must be a public key"},
		{"no jwk", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"jwk": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof has no jwk"},
		{"jwk of another key", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"jwk": other.JWK()})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's signature is invalid"},
		{"alg not fitting the key", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"alg": "ES384"})}}, 401, "invalid_dpop_proof", badProofCh},
		{"RS256 header over an EC signature", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"alg": "RS256", "jwk": authztest.PublicJWK(&authztest.Key{ID: "x", Private: rsaKey})})}}, 401, "invalid_dpop_proof", badProofCh},
		{"crit header", dpopReq{auth: dpop(bound), proofs: []string{withHeader(authztest.Claims{"crit": []string{"exp"}})}}, 401, "invalid_dpop_proof", badProofCh},
		{"tampered payload", dpopReq{auth: dpop(bound), proofs: []string{tampered}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's signature is invalid"},
		{"no jti", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"jti": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof has no jti"},
		{"huge jti", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"jti": strings.Repeat("j", 300)})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof's jti is too long"},
		{"jti not a string", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"jti": 7})}}, 401, "invalid_dpop_proof", badProofCh},
		{"wrong htm", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htm": "POST"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another method"},
		{"htm in lower case", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htm": "get"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another method"},
		{"htu of another host", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htu": "https://evil.example.com/v1/me"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another URI"},
		{"htu of another path", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htu": apiOrigin + "/v1/orders"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another URI"},
		{"htu over http", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htu": "http://api.example.com/v1/me"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another URI"},
		{"htu on another port", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htu": "https://api.example.com:8443/v1/me"})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is for another URI"},
		{"no htu", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"htu": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof needs"},
		{"stale iat", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"iat": time.Now().Add(-2 * time.Minute).Unix()})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is too old"},
		{"iat in the future", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"iat": time.Now().Add(2 * time.Minute).Unix()})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof is issued in the future"},
		{"no iat", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"iat": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof needs"},
		{"iat a string", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"iat": "now"})}}, 401, "invalid_dpop_proof", badProofCh},
		{"no ath", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"ath": nil})}}, 401, "invalid_dpop_proof", badProofCh + "the DPoP proof has no ath"},
		{"ath of another token", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"ath": authztest.ATH(unbound)})}}, 401, "invalid_token", badTokenCh + "the DPoP proof is not for this access token"},
		{"ath over the Authorization value", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"ath": authztest.ATH("DPoP " + bound)})}}, 401, "invalid_token", badTokenCh},
		{"ath padded", dpopReq{auth: dpop(bound), proofs: []string{proof(authztest.Claims{"ath": authztest.ATH(bound) + "="})}}, 401, "invalid_token", badTokenCh},
		{"thumbprint mismatch: token bound to another key", dpopReq{auth: dpop(boundToOther), proofs: []string{k.Proof(t, "GET", uri, boundToOther)}}, 401, "invalid_token", badTokenCh + "Invalid DPoP key binding"},
		{"unbound token with the DPoP scheme", dpopReq{auth: dpop(unbound), proofs: []string{k.Proof(t, "GET", uri, unbound)}}, 401, "invalid_token", badTokenCh + "the token is not DPoP-bound"},
		{"bound token as Bearer (downgrade)", dpopReq{auth: []string{"Bearer " + bound}}, 401, "invalid_token", badTokenCh + "a DPoP-bound token must be sent with the DPoP scheme"},
		{"bound token as Bearer with a proof (downgrade)", dpopReq{auth: []string{"Bearer " + bound}, proofs: []string{k.Proof(t, "GET", uri, bound)}}, 401, "invalid_token", badTokenCh + "a DPoP-bound token must be sent"},
		{"two Authorization headers", dpopReq{auth: []string{"DPoP " + bound, "Bearer " + unbound}, proofs: []string{k.Proof(t, "GET", uri, bound)}}, 400, "invalid_request", `error="invalid_request", error_description="send exactly one Authorization header", DPoP realm="authmesh", error="invalid_request"`},
		{"Bearer on a route requiring DPoP", dpopReq{path: "/v1/bound-only", auth: []string{"Bearer " + unbound}}, 401, "invalid_token", badTokenCh + "this API requires a DPoP-bound token"},
		{"no credentials", dpopReq{}, 401, "missing_token", `DPoP realm="authmesh", ` + allAlgs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := tc.req.send(a)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s; WWW-Authenticate %s", rec.Code, tc.status, rec.Body, challenges(rec))
			}
			checkDPoPAnswer(t, rec, tc.code, tc.wwwAuth, bound, boundToOther, unbound)
		})
	}

	t.Run("valid proof, then replayed at the other replica and the same one", func(t *testing.T) {
		t.Parallel()
		p := k.Proof(t, "GET", uri, bound)
		req := dpopReq{auth: dpop(bound), proofs: []string{p}}
		if rec := req.send(a); rec.Code != 200 {
			t.Fatalf("first use: %d %s %s", rec.Code, rec.Body, challenges(rec))
		}
		for name, replica := range map[string]*echo.Echo{"other replica": b, "same replica": a} {
			rec := req.send(replica)
			if rec.Code != 401 {
				t.Fatalf("replay at the %s: %d, want 401", name, rec.Code)
			}
			checkDPoPAnswer(t, rec, "invalid_dpop_proof", badProofCh+"the DPoP proof has been used before", bound)
		}
	})
}

// challenges is the answer's WWW-Authenticate fields as one list (RFC 9110
// §5.3: several fields are the same as one joined by commas).
func challenges(rec *httptest.ResponseRecorder) string {
	return strings.Join(rec.Header().Values("WWW-Authenticate"), ", ")
}

// checkDPoPAnswer checks the body code, the challenges (Bearer offered
// without error, the DPoP challenge with the error and the algs) and that
// no token leaks.
func checkDPoPAnswer(t *testing.T, rec *httptest.ResponseRecorder, code, wwwAuthPrefix string, tokens ...string) {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != code || body["message"] == "" {
		t.Errorf("body = %s, want error %q", rec.Body, code)
	}
	got := challenges(rec)
	const bearer = `Bearer realm="authmesh", `
	dp := strings.TrimPrefix(got, bearer)
	if !strings.HasPrefix(dp, wwwAuthPrefix) || !strings.HasSuffix(got, allAlgs) {
		t.Errorf("WWW-Authenticate = %q, want %q and a DPoP challenge starting %q ending with the algs", got, bearer, wwwAuthPrefix)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("no Cache-Control: no-store")
	}
	for _, tok := range tokens {
		if strings.Contains(rec.Body.String()+got, tok) {
			t.Error("the answer echoes a token")
		}
	}
}
