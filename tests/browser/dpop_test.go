package browser

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	jose "github.com/go-jose/go-jose/v4"
)

// proofClaims are a DPoP proof's claims (RFC 9449 §4.2).
type proofClaims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	ATH   string `json:"ath"`
	Nonce string `json:"nonce"`
}

// checkedProof is a proof that passed verifyProof.
type checkedProof struct {
	proofClaims
	JKT string // RFC 7638 thumbprint of the header's jwk
}

// verifyProof checks a DPoP proof signed in the browser the way a server
// does (RFC 9449 §4.3): compact JWS, typ dpop+jwt, ES256, a public P-256 jwk
// in the header that verifies the signature, and the claims every proof
// needs.
func verifyProof(t *testing.T, proof string) checkedProof {
	t.Helper()
	if proof == "" {
		t.Fatal("no DPoP proof")
	}
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		t.Fatalf("proof %q is not a compact JWS", proof)
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("proof header: %v", err)
	}
	var header struct {
		Typ string                     `json:"typ"`
		Alg string                     `json:"alg"`
		JWK map[string]json.RawMessage `json:"jwk"`
	}
	if err := json.Unmarshal(rawHeader, &header); err != nil {
		t.Fatalf("proof header %s: %v", rawHeader, err)
	}
	if header.Typ != "dpop+jwt" || header.Alg != "ES256" {
		t.Errorf("proof header typ %q alg %q, want dpop+jwt ES256", header.Typ, header.Alg)
	}
	// Exactly the public members a thumbprint covers: no d, no key_ops/ext.
	var members []string
	for k := range header.JWK {
		members = append(members, k)
	}
	if len(members) != 4 || header.JWK["kty"] == nil || header.JWK["crv"] == nil || header.JWK["x"] == nil || header.JWK["y"] == nil {
		t.Errorf("proof jwk members %v, want exactly kty crv x y", members)
	}

	jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse proof: %v", err)
	}
	jwk := jws.Signatures[0].Header.JSONWebKey
	if jwk == nil || !jwk.IsPublic() || !jwk.Valid() {
		t.Fatalf("proof jwk %+v: want a valid public key", jwk)
	}
	// WebCrypto's raw r||s signature is what JWS ES256 expects.
	payload, err := jws.Verify(jwk)
	if err != nil {
		t.Fatalf("proof signature does not verify with its jwk: %v", err)
	}
	var c checkedProof
	if err := json.Unmarshal(payload, &c.proofClaims); err != nil {
		t.Fatalf("proof claims %s: %v", payload, err)
	}
	if len(c.JTI) < 16 { // ≥ 96 random bits, base64url
		t.Errorf("jti %q: too short to be unpredictable", c.JTI)
	}
	if c.IAT == 0 {
		t.Error("proof without iat")
	} else if d := time.Since(time.Unix(c.IAT, 0)); d < -5*time.Second || d > time.Minute {
		t.Errorf("iat %d is %v from now", c.IAT, d)
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	c.JKT = base64.RawURLEncoding.EncodeToString(tp)
	return c
}

// athOf is the ath a proof for token carries.
func athOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestDPoP checks web/dpop.js and its use by auth.js and api.js in Chromium,
// with no stack: proofs are signed by the page and verified here with
// go-jose; the tenant and a service are played by a stubbed fetch.
func TestDPoP(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tab := modulesPage(t, ctx)

	// run evaluates an async function body with a = auth.js, api = api.js
	// and d = dpop.js in scope, and decodes its JSON result into out.
	run := func(t *testing.T, body string, out any) {
		t.Helper()
		expr := fmt.Sprintf(`(async () => { const a = await import("/auth.js"); const api = await import("/api.js"); const d = await import("/dpop.js"); return JSON.stringify(await (async () => { %s })()); })()`, body)
		c, cancel := context.WithTimeout(tab, 20*time.Second)
		defer cancel()
		got, err := chromedp.Run(c, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("evaluate: %v\n%s", err, body)
		}
		if err := json.Unmarshal([]byte(got), out); err != nil {
			t.Fatalf("result %s: %v", got, err)
		}
	}

	t.Run("RFC 9449 §7.1 ath vector and htu normalisation", func(t *testing.T) {
		var got []string
		run(t, `return [
			await d.ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
			d.htuOf("https://api.example.com/v1/orders?user_id=auth0%7C1#top"),
			d.htuOf("https://api.example.com"),
		];`, &got)
		want := []string{"fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo", "https://api.example.com/v1/orders", "https://api.example.com/"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("proofs, key and session", func(t *testing.T) {
		const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdXRoMHwxIn0.c2ln"
		var got struct {
			Resource, Token, Second, AfterLogout string
			JKT, JKTAfterLogout                  string
			ExportError                          string
			Extractable                          bool
			Usages                               []string
		}
		run(t, `
			const resource = await d.proof({htm: "get", htu: "https://api.example.com/v1/orders?user_id=1#x", accessToken: "`+token+`"});
			const token = await d.proof({htm: "POST", htu: "http://localhost:8400/oauth/token"});
			const second = await d.proof({htm: "POST", htu: "http://localhost:8400/oauth/token"});
			const jkt = await d.thumbprint();
			const k = await d.key();
			let exportError = "";
			try { await crypto.subtle.exportKey("jwk", k.privateKey); exportError = "exported"; } catch (e) { exportError = e.name; }
			await a.logout(); // no session: it only drops the key
			const afterLogout = await d.proof({htm: "GET", htu: "https://api.example.com/v1/orders"});
			return {resource, token, second, afterLogout, jkt, jktAfterLogout: await d.thumbprint(),
				exportError, extractable: k.privateKey.extractable, usages: k.privateKey.usages};
		`, &got)

		res := verifyProof(t, got.Resource)
		if res.HTM != "GET" || res.HTU != "https://api.example.com/v1/orders" || res.ATH != athOf(token) || res.Nonce != "" {
			t.Errorf("resource proof claims %+v: want htm GET, htu without query and fragment, ath of the token, no nonce", res.proofClaims)
		}
		tok := verifyProof(t, got.Token)
		if tok.HTM != "POST" || tok.HTU != "http://localhost:8400/oauth/token" || tok.ATH != "" {
			t.Errorf("token request proof claims %+v: want htm POST, htu the token endpoint, no ath", tok.proofClaims)
		}
		second := verifyProof(t, got.Second)
		if second.JTI == tok.JTI {
			t.Errorf("two proofs share jti %q", tok.JTI)
		}
		if res.JKT != got.JKT || tok.JKT != got.JKT || second.JKT != got.JKT {
			t.Errorf("one session's proofs have thumbprints %s %s %s, want all %s (the page's own)", res.JKT, tok.JKT, second.JKT, got.JKT)
		}
		if got.ExportError != "InvalidAccessError" || got.Extractable {
			t.Errorf("private key: export answered %q, extractable %v; want InvalidAccessError, false", got.ExportError, got.Extractable)
		}
		if strings.Join(got.Usages, ",") != "sign" {
			t.Errorf("private key usages %v, want [sign]", got.Usages)
		}
		after := verifyProof(t, got.AfterLogout)
		if after.JKT == got.JKT || after.JKT != got.JKTAfterLogout {
			t.Errorf("after logout the thumbprint is %s (page says %s), want a new one, not %s", after.JKT, got.JKTAfterLogout, got.JKT)
		}
	})

	// The tenant asks for a nonce first, as Auth0 does for public clients;
	// the service asks for one of its own. Every request's headers are
	// recorded by the stubbed fetch.
	t.Run("token requests and service calls", func(t *testing.T) {
		const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdXRoMHwxIiwiY25mIjp7ImprdCI6IngifX0.c2ln"
		type call struct {
			URL, Method, DPoP, Authorization string
		}
		var got struct {
			Calls                      []call
			TokenType, BearerTokenType string
			JKT                        string
			Left                       int
		}
		run(t, `
			const calls = [];
			const json = (status, body, headers = {}) => new Response(JSON.stringify(body), {status, headers: {"Content-Type": "application/json", ...headers}});
			let answers = [];
			const realFetch = window.fetch;
			window.fetch = async (url, init = {}) => {
				const h = new Headers(init.headers);
				calls.push({url: String(url), method: init.method || "GET", dpop: h.get("DPoP") || "", authorization: h.get("Authorization") || ""});
				const next = answers.shift();
				if (!next) throw new TypeError("unexpected fetch " + url);
				return next();
			};
			const callback = () => {
				sessionStorage.setItem("authmesh.login-transaction", JSON.stringify({verifier: "v".repeat(43), state: "st", at: Date.now()}));
				history.replaceState(null, "", "/blank.html?code=c0de&state=st");
				return a.handleRedirect();
			};
			try {
				answers = [
					() => json(400, {error: "use_dpop_nonce", error_description: "Authorization server requires nonce in DPoP proof"}, {"DPoP-Nonce": "as-nonce-1"}),
					() => json(200, {access_token: "`+token+`", token_type: "DPoP", expires_in: 3600, refresh_token: "rt-1"}),
					() => new Response("", {status: 401, headers: {"WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"', "DPoP-Nonce": "rs-nonce-1"}}),
					() => json(200, {orders: []}),
					() => json(200, {access_token: "`+token+`", token_type: "DPoP", expires_in: 3600, refresh_token: "rt-2"}),
					() => json(200, {orders: []}),
					() => new Response("", {status: 200}), // revocation at logout
					() => json(200, {access_token: "bearer-token", token_type: "Bearer", expires_in: 3600}),
					() => json(200, {orders: []}),
				];
				await callback();
				const tokenType = a.current().tokenType;
				const jkt = await d.thumbprint();
				await api.orders.mine();
				await a.refresh();
				await api.orders.mine();
				await a.logout();
				await callback();
				const bearerTokenType = a.current().tokenType;
				await api.orders.mine();
				await a.logout();
				return {calls, tokenType, bearerTokenType, jkt, left: answers.length};
			} finally {
				window.fetch = realFetch;
			}
		`, &got)

		if got.Left != 0 {
			t.Errorf("%d stubbed answers left unused", got.Left)
		}
		if len(got.Calls) != 9 {
			t.Fatalf("%d requests, want 9: %+v", len(got.Calls), got.Calls)
		}
		if got.TokenType != "DPoP" || got.BearerTokenType != "Bearer" {
			t.Errorf("session token types %q then %q, want DPoP then Bearer", got.TokenType, got.BearerTokenType)
		}
		const tokenURL, ordersURL = "http://localhost:8400/oauth/token", "http://localhost:8402/v1/orders"
		tests := []struct {
			name          string
			url, method   string
			authorization string
			proof         bool
			nonce, ath    string
		}{
			{"code exchange", tokenURL, "POST", "", true, "", ""},
			{"code exchange with the tenant's nonce", tokenURL, "POST", "", true, "as-nonce-1", ""},
			{"service call", ordersURL, "GET", "DPoP " + token, true, "", athOf(token)},
			{"service call with the service's nonce", ordersURL, "GET", "DPoP " + token, true, "rs-nonce-1", athOf(token)},
			{"refresh, with the tenant's nonce kept", tokenURL, "POST", "", true, "as-nonce-1", ""},
			{"service call after refresh, nonce kept", ordersURL, "GET", "DPoP " + token, true, "rs-nonce-1", athOf(token)},
			{"revocation at logout", "http://localhost:8400/oauth/revoke", "POST", "", false, "", ""},
			{"code exchange of the next session", tokenURL, "POST", "", true, "", ""},
			{"Bearer token: no proof", ordersURL, "GET", "Bearer bearer-token", false, "", ""},
		}
		jtis := map[string]bool{}
		for i, tc := range tests {
			c := got.Calls[i]
			if c.URL != tc.url || c.Method != tc.method || c.Authorization != tc.authorization {
				t.Errorf("%s: %s %s Authorization %q, want %s %s %q", tc.name, c.Method, c.URL, c.Authorization, tc.method, tc.url, tc.authorization)
			}
			if !tc.proof {
				if c.DPoP != "" {
					t.Errorf("%s: sent a DPoP proof", tc.name)
				}
				continue
			}
			p := verifyProof(t, c.DPoP)
			if p.HTM != tc.method || p.HTU != tc.url || p.Nonce != tc.nonce || p.ATH != tc.ath {
				t.Errorf("%s: proof claims %+v, want htm %s htu %s nonce %q ath %q", tc.name, p.proofClaims, tc.method, tc.url, tc.nonce, tc.ath)
			}
			if i < 6 && p.JKT != got.JKT {
				t.Errorf("%s: proof by key %s, want the session's %s", tc.name, p.JKT, got.JKT)
			}
			if i == 7 && p.JKT == got.JKT {
				t.Errorf("%s: the next session signs with the previous session's key %s", tc.name, p.JKT)
			}
			if jtis[p.JTI] {
				t.Errorf("%s: jti %q reused", tc.name, p.JTI)
			}
			jtis[p.JTI] = true
		}
	})
}
