package tenant

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/tools/devtenant/tenanttest"
)

// tenantWithPoP serves deploy/tenant.yaml with the API's
// proof_of_possession replaced by pop ("" removes it).
func tenantWithPoP(t *testing.T, pop string, mutate func(*Config)) *testTenant {
	t.Helper()
	file := tenanttest.WithPoP(t, testTenantFile, pop)
	return newTenant(t, func(c *Config) {
		c.TenantFile = file
		if mutate != nil {
			mutate(c)
		}
	})
}

func (tt *testTenant) postProof(t *testing.T, v url.Values, proof string) response {
	t.Helper()
	hdr := map[string]string{}
	if proof != "" {
		hdr["DPoP"] = proof
	}
	return tt.do(t, http.MethodPost, "/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(v.Encode()), hdr)
}

// validateWithAuthz checks tok as the services do (pkg/authz, which reads
// cnf.jkt).
func (tt *testTenant) validateWithAuthz(t *testing.T, tok string) {
	t.Helper()
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(tt.ts.URL + "/.well-known/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(keys, authz.WithIssuers(testIssuer), authz.WithAudiences(apiAud))
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Validate(t.Context(), tok)
	if err != nil || c.JKT == "" {
		t.Fatalf("pkg/authz: %+v %v", c, err)
	}
}

func (tt *testTenant) tokenEndpoint() string { return tt.ts.URL + "/oauth/token" }

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}, "refresh_token": {rt}}
}

// TestDPoPTokenEndpoint: the grants of deploy/tenant.yaml (DPoP allowed)
// with and without proofs.
func TestDPoPTokenEndpoint(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	k := authztest.NewDPoPKey(t)
	password := passwordForm("alice@authmesh.dev", "openid read:profile offline_access")

	t.Run("no proof: Bearer, unbound", func(t *testing.T) {
		r := tt.postProof(t, password, "")
		_, claims := decodeJWT(t, r.body["access_token"].(string))
		if r.status != 200 || r.body["token_type"] != "Bearer" || claims["cnf"] != nil {
			t.Fatalf("%d %v %v", r.status, r.body["token_type"], claims["cnf"])
		}
	})

	var refresh string
	t.Run("proof: DPoP-bound access token, refresh token bound to the key", func(t *testing.T) {
		proof := k.Proof(t, "POST", tt.tokenEndpoint(), "")
		r := tt.postProof(t, password, proof)
		if r.status != 200 || r.body["token_type"] != "DPoP" {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		hdr, claims := decodeJWT(t, r.body["access_token"].(string))
		cnf, _ := claims["cnf"].(map[string]any)
		if cnf["jkt"] != k.JKT() || hdr["typ"] != "JWT" || claims["sub"] != aliceID {
			t.Fatalf("header %v claims %v", hdr, claims)
		}
		if err := tt.verifyWithJWKS(t, r.body["access_token"].(string)); err != nil {
			t.Fatal(err)
		}
		if _, ok := claims["exp"].(float64); !ok {
			t.Fatalf("exp %#v: want a JSON number", claims["exp"])
		}
		tt.validateWithAuthz(t, r.body["access_token"].(string))
		refresh = r.body["refresh_token"].(string)
		if again := tt.postProof(t, password, proof); again.status != 400 || again.body["error"] != "invalid_dpop_proof" {
			t.Fatalf("replayed proof: %d %s", again.status, again.raw)
		}
	})

	t.Run("refresh needs a proof by the same key", func(t *testing.T) {
		if r := tt.postProof(t, refreshForm(refresh), ""); r.status != 400 || r.body["error"] != "invalid_dpop_proof" {
			t.Fatalf("without a proof: %d %s", r.status, r.raw)
		}
		other := authztest.NewDPoPKey(t)
		if r := tt.postProof(t, refreshForm(refresh), other.Proof(t, "POST", tt.tokenEndpoint(), "")); r.status != 400 || r.body["error"] != "invalid_dpop_proof" {
			t.Fatalf("another key: %d %s", r.status, r.raw)
		}
		r := tt.postProof(t, refreshForm(refresh), k.Proof(t, "POST", tt.tokenEndpoint(), ""))
		if r.status != 200 || r.body["token_type"] != "DPoP" {
			t.Fatalf("same key: %d %s", r.status, r.raw)
		}
		// The rotated refresh token is bound too.
		if r2 := tt.postProof(t, refreshForm(r.body["refresh_token"].(string)), ""); r2.status != 400 {
			t.Fatalf("rotated refresh token without a proof: %d %s", r2.status, r2.raw)
		}
	})

	t.Run("client credentials with a proof", func(t *testing.T) {
		r := tt.postProof(t, ccForm("orders-service", apiAud), k.Proof(t, "POST", tt.tokenEndpoint(), ""))
		_, claims := decodeJWT(t, r.body["access_token"].(string))
		if cnf, _ := claims["cnf"].(map[string]any); r.status != 200 || r.body["token_type"] != "DPoP" || cnf["jkt"] != k.JKT() {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})

	for name, proof := range map[string]string{
		"wrong htm":   k.Proof(t, "GET", tt.tokenEndpoint(), ""),
		"wrong htu":   k.Proof(t, "POST", tt.ts.URL+"/userinfo", ""),
		"typ JWT":     k.ProofWith(t, authztest.Claims{"typ": "JWT"}, k.ProofClaims("POST", tt.tokenEndpoint(), "")),
		"private jwk": k.ProofWith(t, authztest.Claims{"jwk": k.PrivateJWK()}, k.ProofClaims("POST", tt.tokenEndpoint(), "")),
		"HS256":       authztest.HS256Proof(t, []byte(strings.Repeat("s", 32)), k.ProofClaims("POST", tt.tokenEndpoint(), "")),
		"garbage":     "not-a-proof",
	} {
		t.Run("bad proof: "+name, func(t *testing.T) {
			r := tt.postProof(t, password, proof)
			if r.status != 400 || r.body["error"] != "invalid_dpop_proof" || r.body["error_description"] == "" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
}

// TestDPoPRequiredAndNonces: required: true refuses requests without a
// proof; with nonces on, a public client's first proof is answered
// use_dpop_nonce with a DPoP-Nonce, and the retry with it succeeds.
func TestDPoPRequiredAndNonces(t *testing.T) {
	t.Parallel()
	k := authztest.NewDPoPKey(t)
	tt := tenantWithPoP(t, "    proof_of_possession:\n      mechanism: dpop\n      required: true\n", func(c *Config) { c.DPoPNonces = true })
	password := passwordForm("alice@authmesh.dev", "openid read:profile")

	if r := tt.postProof(t, password, ""); r.status != 400 || r.body["error"] != "invalid_request" {
		t.Fatalf("required, no proof: %d %s", r.status, r.raw)
	}
	r := tt.postProof(t, password, k.Proof(t, "POST", tt.tokenEndpoint(), ""))
	nonce := r.header.Get("DPoP-Nonce")
	if r.status != 400 || r.body["error"] != "use_dpop_nonce" || nonce == "" {
		t.Fatalf("no nonce: %d %s %q", r.status, r.raw, nonce)
	}
	proof := k.ProofWith(t, nil, k.ProofClaims("POST", tt.tokenEndpoint(), "").With(authztest.Claims{"nonce": nonce}))
	if r := tt.postProof(t, password, proof); r.status != 200 || r.body["token_type"] != "DPoP" {
		t.Fatalf("with the nonce: %d %s", r.status, r.raw)
	}
	// A confidential client needs no nonce (as at Auth0), but a proof.
	if r := tt.postProof(t, ccForm("orders-service", apiAud), k.Proof(t, "POST", tt.tokenEndpoint(), "")); r.status != 200 || r.body["token_type"] != "DPoP" {
		t.Fatalf("client credentials: %d %s", r.status, r.raw)
	}
	if r := tt.postProof(t, ccForm("orders-service", apiAud), ""); r.status != 400 {
		t.Fatalf("client credentials without a proof: %d %s", r.status, r.raw)
	}
}

// TestDPoPRequiredFor: DPoPRequired answers as the token endpoint refuses:
// required for all clients, for public ones only, or not at all.
func TestDPoPRequiredFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, pop      string
		cli, confident bool // the public CLI client; a confidential service client
	}{
		{"optional", "    proof_of_possession:\n      mechanism: dpop\n      required: false\n", false, false},
		{"all clients", "    proof_of_possession:\n      mechanism: dpop\n      required: true\n", true, true},
		{"public clients", "    proof_of_possession:\n      mechanism: dpop\n      required: true\n      required_for: public_clients\n", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tt := tenantWithPoP(t, tc.pop, nil)
			if got := tt.srv.DPoPRequired(apiAud, "authmesh-cli"); got != tc.cli {
				t.Errorf("authmesh-cli: %v, want %v", got, tc.cli)
			}
			if got := tt.srv.DPoPRequired(apiAud, "orders-service"); got != tc.confident {
				t.Errorf("orders-service: %v, want %v", got, tc.confident)
			}
			// The token endpoint agrees.
			if r := tt.postProof(t, passwordForm("alice@authmesh.dev", "openid"), ""); (r.status == 400) != tc.cli {
				t.Errorf("password grant without a proof: %d %s", r.status, r.raw)
			}
			if tt.srv.DPoPRequired("https://unknown.example", "authmesh-cli") || tt.srv.DPoPRequired(apiAud, "nobody") {
				t.Error("an unknown API or client requires DPoP")
			}
		})
	}
}

// TestDPoPWithoutAPIPolicy: an API without proof_of_possession issues an
// unbound Bearer token even to a client that sent a proof (Auth0's rule).
func TestDPoPWithoutAPIPolicy(t *testing.T) {
	t.Parallel()
	k := authztest.NewDPoPKey(t)
	tt := tenantWithPoP(t, "", nil)
	r := tt.postProof(t, passwordForm("alice@authmesh.dev", "read:profile"), k.Proof(t, "POST", tt.tokenEndpoint(), ""))
	_, claims := decodeJWT(t, r.body["access_token"].(string))
	if r.status != 200 || r.body["token_type"] != "Bearer" || claims["cnf"] != nil {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if _, err := LoadModel(testIssuer, tenanttest.WithPoP(t, testTenantFile, "    proof_of_possession:\n      mechanism: mtls\n"), devDir); err == nil || !strings.Contains(err.Error(), "mtls") {
		t.Fatalf("mtls: %v", err)
	}
}

// TestDPoPBoundAuthorizationCode: a code whose /authorize request named
// dpop_jkt (RFC 9449 §10) is redeemed only with a proof by that key — the
// attacker holding the code and its PKCE verifier but another key gets no
// tokens and does not use the code up — and the tokens are bound to the key.
func TestDPoPBoundAuthorizationCode(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	const cb = "http://localhost:8404/callback"
	k, attacker := authztest.NewDPoPKey(t), authztest.NewDPoPKey(t)
	code := func(t *testing.T, jkt, challenge string) response {
		t.Helper()
		form := url.Values{"response_type": {"code"}, "client_id": {"authmesh-web"}, "redirect_uri": {cb},
			"scope": {"openid read:orders"}, "audience": {apiAud}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
			"dpop_jkt": {jkt}, "username": {"alice@authmesh.dev"}, "password": {"dev-password"}}
		return tt.do(t, http.MethodPost, "/authorize", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), nil)
	}
	redirectParam := func(t *testing.T, r response, name string) string {
		t.Helper()
		loc, err := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusFound || err != nil {
			t.Fatalf("authorize: %d %q", r.status, r.header.Get("Location"))
		}
		return loc.Query().Get(name)
	}
	redeem := func(code, verifier, proof string) response {
		return tt.postProof(t, url.Values{"grant_type": {"authorization_code"}, "client_id": {"authmesh-web"},
			"code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier}}, proof)
	}

	verifier, challenge := pkcePair("j")
	c := redirectParam(t, code(t, k.JKT(), challenge), "code")
	for name, proof := range map[string]string{
		"no proof":               "",
		"a proof by another key": attacker.Proof(t, "POST", tt.tokenEndpoint(), ""),
	} {
		if r := redeem(c, verifier, proof); r.status != 400 || r.body["error"] != "invalid_dpop_proof" || r.body["access_token"] != nil {
			t.Fatalf("%s: %d %s", name, r.status, r.raw)
		}
	}
	r := redeem(c, verifier, k.Proof(t, "POST", tt.tokenEndpoint(), ""))
	if r.status != 200 || r.body["token_type"] != "DPoP" {
		t.Fatalf("the bound key: %d %s", r.status, r.raw)
	}
	if _, claims := decodeJWT(t, r.body["access_token"].(string)); claims["cnf"].(map[string]any)["jkt"] != k.JKT() {
		t.Fatalf("cnf %v", claims["cnf"])
	}

	if e := redirectParam(t, code(t, "not-a-thumbprint", challenge), "error"); e != "invalid_request" {
		t.Fatalf("malformed dpop_jkt: error %q, want invalid_request", e)
	}
	// Without dpop_jkt a code is bound by PKCE alone, and any key may be
	// the tokens' (the first proof at the token endpoint chooses it).
	v2, ch2 := pkcePair("k")
	if r := redeem(redirectParam(t, code(t, "", ch2), "code"), v2, attacker.Proof(t, "POST", tt.tokenEndpoint(), "")); r.status != 200 || r.body["token_type"] != "DPoP" {
		t.Fatalf("unbound code: %d %s", r.status, r.raw)
	}
}
