package tenant

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestTokenShapes(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	customerPerms := []any{"read:profile", "update:profile", "create:orders", "read:orders", "cancel:orders", "read:invoices", "pay:invoices"}
	realm := passwordForm("alice@authmesh.dev", "read:orders")
	realm.Set("grant_type", GrantPasswordRealm)
	realm.Set("realm", Connection)
	tests := []struct {
		name string
		form url.Values
		want map[string]any // exact claims except iat/exp
	}{
		{
			name: "user with openid: aud array incl userinfo, scope = requested ∩ permissions",
			form: passwordForm("alice@authmesh.dev", "openid profile email read:orders read:users"),
			want: map[string]any{
				"iss": testIssuer, "sub": aliceID, "aud": []any{apiAud, testIssuer + "userinfo"},
				"azp": "authmesh-cli", "gty": "password", "scope": "openid profile email read:orders",
				"permissions": customerPerms, RolesClaim: []any{"customer"},
			},
		},
		{
			name: "user without openid: aud string",
			form: passwordForm("ALICE@authmesh.dev", "read:orders create:orders"),
			want: map[string]any{
				"iss": testIssuer, "sub": aliceID, "aud": apiAud, "azp": "authmesh-cli", "gty": "password",
				"scope": "read:orders create:orders", "permissions": customerPerms, RolesClaim: []any{"customer"},
			},
		},
		{
			name: "password-realm",
			form: realm,
			want: map[string]any{
				"iss": testIssuer, "sub": aliceID, "aud": apiAud, "azp": "authmesh-cli", "gty": "password",
				"scope": "read:orders", "permissions": customerPerms, RolesClaim: []any{"customer"},
			},
		},
		{
			name: "admin gets every permission",
			form: passwordForm("carol@authmesh.dev", "refund:invoices"),
			want: map[string]any{
				"iss": testIssuer, "sub": "auth0|6553da60a54af58e29493993", "aud": apiAud, "azp": "authmesh-cli", "gty": "password",
				"scope": "refund:invoices", RolesClaim: []any{"admin"},
				"permissions": []any{"read:profile", "update:profile", "read:users", "block:users", "assign:roles", "create:orders", "read:orders", "cancel:orders", "read:all-orders", "read:invoices", "pay:invoices", "read:all-invoices", "refund:invoices"},
			},
		},
		{
			name: "M2M: sub <client>@clients, gty hyphenated, all granted scopes",
			form: ccForm("orders-service", apiAud),
			want: map[string]any{
				"iss": testIssuer, "sub": "orders-service@clients", "aud": apiAud, "azp": "orders-service",
				"gty": "client-credentials", "scope": "cancel:orders read:all-orders", "permissions": []any{"cancel:orders", "read:all-orders"},
			},
		},
		{
			name: "M2M for the Management API: no permissions claim",
			form: ccForm("users-service", mgmtAud),
			want: map[string]any{
				"iss": testIssuer, "sub": "users-service@clients", "aud": mgmtAud, "azp": "users-service",
				"gty": "client-credentials", "scope": "read:users update:users read:roles create:role_members delete:role_members",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tt.postForm(t, tc.form)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(86400) || r.body["scope"] != tc.want["scope"] {
				t.Errorf("response = %s", r.raw)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
			}
			hdr, claims := decodeJWT(t, r.body["access_token"].(string))
			if hdr["alg"] != "RS256" || hdr["typ"] != "JWT" || hdr["kid"] == "" || hdr["kid"] == nil {
				t.Errorf("header = %v", hdr)
			}
			iat, ok1 := claims["iat"].(float64)
			exp, ok2 := claims["exp"].(float64)
			if !ok1 || !ok2 || exp-iat != 86400 || iat != float64(int64(iat)) {
				t.Errorf("iat/exp = %v/%v, want integers 86400 s apart", claims["iat"], claims["exp"])
			}
			delete(claims, "iat")
			delete(claims, "exp")
			if !reflect.DeepEqual(claims, tc.want) {
				t.Errorf("claims\n got %v\nwant %v", claims, tc.want)
			}
			if err := tt.verifyWithJWKS(t, r.body["access_token"].(string)); err != nil {
				t.Errorf("token does not verify with the JWKS: %v", err)
			}
		})
	}
}

func TestTokenJSONBodyAndIDToken(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	body := `{"grant_type":"password","username":"dave@authmesh.dev","password":"dev-password","client_id":"authmesh-cli","audience":"https://api.authmesh.dev","scope":"openid email read:all-orders"}`
	r := tt.do(t, http.MethodPost, "/oauth/token", "application/json", strings.NewReader(body), nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	_, id := decodeJWT(t, r.body["id_token"].(string))
	if id["aud"] != "authmesh-cli" || id["email"] != "dave@authmesh.dev" || id["email_verified"] != true || id["sub"] != "auth0|6553da60a54af58e29493994" {
		t.Errorf("id token = %v", id)
	}
	if _, ok := r.body["refresh_token"]; ok {
		t.Error("refresh token issued without offline_access")
	}
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	with := func(v url.Values, kv ...string) url.Values {
		c := url.Values{}
		for k, vs := range v {
			c[k] = append([]string(nil), vs...)
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				c.Del(kv[i])
			} else {
				c.Set(kv[i], kv[i+1])
			}
		}
		return c
	}
	alice := passwordForm("alice@authmesh.dev", "openid")
	realm := with(alice, "grant_type", GrantPasswordRealm)
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		desc        string
	}{
		{"missing grant_type", "", url.Values{"client_id": {"authmesh-cli"}}.Encode(), 400, "invalid_request", "grant_type"},
		{"unsupported grant", "", "grant_type=urn:foo", 400, "unsupported_grant_type", "urn:foo"},
		{"wrong password", "", with(alice, "password", "nope").Encode(), 403, "invalid_user_password", "Wrong email or password."},
		{"unknown user", "", with(alice, "username", "mallory@authmesh.dev").Encode(), 403, "invalid_user_password", "Wrong email or password."},
		{"missing username", "", with(alice, "username", "").Encode(), 400, "invalid_request", "username"},
		{"missing password", "", with(alice, "password", "").Encode(), 400, "invalid_request", "password"},
		{"unknown audience", "", with(alice, "audience", "https://nope.example").Encode(), 403, "access_denied", "Service not found: https://nope.example"},
		{"unknown client", "", with(alice, "client_id", "nope").Encode(), 401, "invalid_client", ""},
		{"missing client", "", with(alice, "client_id", "").Encode(), 400, "invalid_request", "client_id"},
		{"grant not allowed for client", "", with(alice, "client_id", "authmesh-web").Encode(), 403, "unauthorized_client", "Grant type 'password' not allowed for the client."},
		{"realm missing", "", with(realm, "realm", "").Encode(), 400, "invalid_request", "realm"},
		{"realm unknown", "", with(realm, "realm", "google-oauth2").Encode(), 400, "invalid_request", "realm"},
		{"M2M without grant for audience", "", ccForm("billing-service", mgmtAud).Encode(), 403, "access_denied", `Client is not authorized to access "http://localhost:8400/api/v2/"`},
		{"M2M unknown audience", "", ccForm("orders-service", "https://nope.example").Encode(), 403, "access_denied", "Service not found: https://nope.example"},
		{"M2M missing audience", "", with(ccForm("orders-service", ""), "audience", "").Encode(), 403, "access_denied", "audience"},
		{"M2M wrong secret", "", with(ccForm("orders-service", apiAud), "client_secret", "guess").Encode(), 401, "invalid_client", ""},
		{"M2M missing secret", "", with(ccForm("orders-service", apiAud), "client_secret", "").Encode(), 401, "invalid_client", ""},
		{"public client asks client_credentials", "", with(ccForm("authmesh-cli", apiAud)).Encode(), 403, "unauthorized_client", ""},
		{"user token for the Management API", "", with(alice, "audience", mgmtAud).Encode(), 403, "access_denied", ""},
		{"malformed JSON", "application/json", `{"grant_type":`, 400, "invalid_request", ""},
		{"non-string JSON value", "application/json", `{"grant_type":"password","username":5}`, 400, "invalid_request", "username"},
		{"JSON array body", "application/json", `["password"]`, 400, "invalid_request", ""},
		{"repeated parameter", "", alice.Encode() + "&grant_type=password", 400, "invalid_request", "repeated"},
		{"unsupported content type", "text/plain", "grant_type=password", 415, "invalid_request", "Content-Type"},
		{"oversized body", "", "grant_type=password&x=" + strings.Repeat("a", maxBody), 413, "invalid_request", "too large"},
		{"malformed form", "", "grant_type=%zz", 400, "invalid_request", ""},
		{"refresh without token", "", url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}}.Encode(), 400, "invalid_request", "refresh_token"},
		{"unknown refresh token", "", url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}, "refresh_token": {"v1.nope"}}.Encode(), 403, "invalid_grant", ""},
		{"unknown code", "", url.Values{"grant_type": {"authorization_code"}, "client_id": {"authmesh-web"}, "code": {"nope"}}.Encode(), 403, "invalid_grant", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct := tc.contentType
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			r := tt.do(t, http.MethodPost, "/oauth/token", ct, strings.NewReader(tc.body), nil)
			if r.status != tc.status || r.body["error"] != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, tc.status, tc.code)
			}
			desc, _ := r.body["error_description"].(string)
			if !strings.Contains(desc, tc.desc) || len(r.body) != 2 {
				t.Errorf("body %s: want exactly error and error_description containing %q", r.raw, tc.desc)
			}
		})
	}
	t.Run("GET is not allowed", func(t *testing.T) {
		t.Parallel()
		r := tt.do(t, http.MethodGet, "/oauth/token", "", nil, nil)
		if r.status != http.StatusMethodNotAllowed || r.body["error"] != "invalid_request" {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	})
	t.Run("HTTP Basic client authentication", func(t *testing.T) {
		t.Parallel()
		v := ccForm("orders-service", apiAud)
		v.Del("client_secret")
		v.Del("client_id")
		r := tt.do(t, http.MethodPost, "/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(v.Encode()),
			map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-service:orders-service-dev-secret"))})
		if r.status != http.StatusOK {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	})
}

func TestBlockedUserGetsNoToken(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	refresh := tt.postForm(t, passwordForm("bob@authmesh.dev", "openid offline_access")).body["refresh_token"].(string)
	old := tt.accessToken(t, passwordForm("bob@authmesh.dev", "openid"))
	admin := tt.accessToken(t, ccForm("users-service", mgmtAud))
	if r := tt.mgmt(t, http.MethodPatch, "/api/v2/users/"+url.PathEscape(bobID), admin, map[string]any{"blocked": true}); r.status != 200 || r.body["blocked"] != true {
		t.Fatalf("block: %d %s", r.status, r.raw)
	}
	check := func(t *testing.T, tt *testTenant, form url.Values) {
		t.Helper()
		r := tt.postForm(t, form)
		if r.status != http.StatusUnauthorized || r.body["error"] != "unauthorized" || r.body["error_description"] != "user is blocked" {
			t.Errorf("got %d %s, want 401 unauthorized user is blocked", r.status, r.raw)
		}
	}
	check(t, tt, passwordForm("bob@authmesh.dev", "openid"))
	check(t, tt, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}, "refresh_token": {refresh}})
	if r := tt.do(t, http.MethodGet, "/userinfo", "", nil, map[string]string{"Authorization": "Bearer " + old}); r.status != http.StatusUnauthorized {
		t.Errorf("userinfo for a blocked user: %d", r.status)
	}
	if _, err := tt.srv.IssueUserToken("bob@authmesh.dev", "", ""); err == nil {
		t.Error("IssueUserToken issued a token to a blocked user")
	}
	// The block is persisted: a restart on the same data dir keeps it.
	tt.ts.Close()
	again := newTenantOn(t, tt.dataDir)
	check(t, again, passwordForm("bob@authmesh.dev", "openid"))
	if r := again.postForm(t, passwordForm("alice@authmesh.dev", "openid")); r.status != 200 {
		t.Errorf("alice after restart: %d", r.status)
	}
	admin = again.accessToken(t, ccForm("users-service", mgmtAud))
	again.mgmt(t, http.MethodPatch, "/api/v2/users/"+url.PathEscape(bobID), admin, map[string]any{"blocked": false})
	if r := again.postForm(t, passwordForm("bob@authmesh.dev", "openid")); r.status != 200 {
		t.Errorf("unblocked bob: %d %s", r.status, r.raw)
	}
}

// newTenantOn restarts a tenant on the state in dataDir.
func newTenantOn(t *testing.T, dataDir string) *testTenant {
	t.Helper()
	return newTenant(t, func(c *Config) { c.DataDir = dataDir })
}

func TestRefreshTokenRotation(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	first := tt.postForm(t, passwordForm("alice@authmesh.dev", "openid offline_access read:orders"))
	rt1, _ := first.body["refresh_token"].(string)
	if rt1 == "" {
		t.Fatalf("no refresh token: %s", first.raw)
	}
	refresh := func(rt string) response {
		return tt.postForm(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}, "refresh_token": {rt}})
	}
	r2 := refresh(rt1)
	rt2, _ := r2.body["refresh_token"].(string)
	if r2.status != 200 || rt2 == "" || rt2 == rt1 {
		t.Fatalf("rotation: %d %s", r2.status, r2.raw)
	}
	_, claims := decodeJWT(t, r2.body["access_token"].(string))
	if claims["gty"] != "refresh_token" || claims["scope"] != "openid offline_access read:orders" || claims["sub"] != aliceID {
		t.Errorf("refreshed claims = %v", claims)
	}
	// Another client cannot use alice's refresh token.
	other := tt.postForm(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-web"}, "refresh_token": {rt2}})
	if other.status != 403 || other.body["error"] != "invalid_grant" {
		t.Errorf("other client: %d %s", other.status, other.raw)
	}
	// Reusing the rotated token revokes the family: rt2 dies with it.
	if r := refresh(rt1); r.status != 403 || r.body["error"] != "invalid_grant" {
		t.Fatalf("reuse: %d %s", r.status, r.raw)
	}
	if r := refresh(rt2); r.status != 403 || r.body["error"] != "invalid_grant" {
		t.Errorf("family member after reuse: %d %s", r.status, r.raw)
	}
	// Revocation endpoint revokes a fresh family.
	rt3 := tt.postForm(t, passwordForm("alice@authmesh.dev", "offline_access")).body["refresh_token"].(string)
	rev := tt.do(t, http.MethodPost, "/oauth/revoke", "application/json", strings.NewReader(`{"client_id":"authmesh-cli","token":"`+rt3+`"}`), nil)
	if rev.status != 200 {
		t.Fatalf("revoke: %d %s", rev.status, rev.raw)
	}
	if r := refresh(rt3); r.status != 403 {
		t.Errorf("revoked token still works: %d", r.status)
	}
}

func pkcePair(seed string) (verifier, challenge string) {
	verifier = strings.Repeat(seed, 50)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestAuthorizationCodePKCE(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	const cb = "http://localhost:8404/callback"
	authorizeQuery := func(challenge string) url.Values {
		return url.Values{"response_type": {"code"}, "client_id": {"authmesh-web"}, "redirect_uri": {cb},
			"scope": {"openid profile offline_access read:orders"}, "audience": {apiAud}, "state": {"xyz<&>"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "nonce": {"n-1"}}
	}
	login := func(t *testing.T, q url.Values, password string) response {
		t.Helper()
		form := url.Values{}
		for k, v := range q {
			form[k] = v
		}
		form.Set("username", "alice@authmesh.dev")
		form.Set("password", password)
		return tt.do(t, http.MethodPost, "/authorize", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), nil)
	}
	codeFrom := func(t *testing.T, r response) string {
		t.Helper()
		if r.status != http.StatusFound {
			t.Fatalf("login: %d %s", r.status, r.raw)
		}
		loc, err := url.Parse(r.header.Get("Location"))
		if err != nil || !strings.HasPrefix(loc.String(), cb+"?") || loc.Query().Get("state") != "xyz<&>" {
			t.Fatalf("redirect = %q", r.header.Get("Location"))
		}
		return loc.Query().Get("code")
	}
	exchange := func(code, verifier string) response {
		return tt.postForm(t, url.Values{"grant_type": {"authorization_code"}, "client_id": {"authmesh-web"},
			"code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier}})
	}

	t.Run("login form is plain HTML carrying the request", func(t *testing.T) {
		_, ch := pkcePair("a")
		r := tt.do(t, http.MethodGet, "/authorize?"+authorizeQuery(ch).Encode(), "", nil, nil)
		page := string(r.raw)
		if r.status != 200 || !strings.Contains(page, `<form method="post"`) || strings.Contains(page, "<script") ||
			!strings.Contains(page, `value="xyz&lt;&amp;&gt;"`) || !strings.Contains(page, ch) {
			t.Errorf("page (%d):\n%s", r.status, page)
		}
	})
	t.Run("redirect_uri not in callbacks is refused without redirecting", func(t *testing.T) {
		q := authorizeQuery("x")
		q.Set("redirect_uri", "https://evil.example/cb")
		r := tt.do(t, http.MethodGet, "/authorize?"+q.Encode(), "", nil, nil)
		if r.status != 400 || r.header.Get("Location") != "" {
			t.Errorf("got %d Location=%q", r.status, r.header.Get("Location"))
		}
	})
	t.Run("public client without code_challenge gets an error redirect", func(t *testing.T) {
		q := authorizeQuery("")
		q.Del("code_challenge")
		r := tt.do(t, http.MethodGet, "/authorize?"+q.Encode(), "", nil, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusFound || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("state") != "xyz<&>" {
			t.Errorf("got %d %q", r.status, r.header.Get("Location"))
		}
	})
	t.Run("wrong password shows the form again", func(t *testing.T) {
		_, ch := pkcePair("b")
		r := login(t, authorizeQuery(ch), "wrong")
		if r.status != http.StatusUnauthorized || !strings.Contains(string(r.raw), "Wrong email or password.") {
			t.Errorf("got %d", r.status)
		}
	})
	t.Run("verifier mismatch", func(t *testing.T) {
		_, ch := pkcePair("c")
		code := codeFrom(t, login(t, authorizeQuery(ch), "dev-password"))
		other, _ := pkcePair("d")
		if r := exchange(code, other); r.status != 403 || r.body["error"] != "invalid_grant" || r.body["error_description"] != "Failed to verify code verifier" {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	})
	t.Run("success, then reuse revokes the issued refresh tokens", func(t *testing.T) {
		v, ch := pkcePair("e")
		code := codeFrom(t, login(t, authorizeQuery(ch), "dev-password"))
		r := exchange(code, v)
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
		_, claims := decodeJWT(t, r.body["access_token"].(string))
		if claims["azp"] != "authmesh-web" || claims["sub"] != aliceID || claims["scope"] != "openid profile offline_access read:orders" {
			t.Errorf("claims = %v", claims)
		}
		if _, id := decodeJWT(t, r.body["id_token"].(string)); id["nonce"] != "n-1" || id["aud"] != "authmesh-web" {
			t.Errorf("id token = %v", id)
		}
		rt := r.body["refresh_token"].(string)
		if again := exchange(code, v); again.status != 403 || again.body["error"] != "invalid_grant" {
			t.Errorf("code reuse: %d %s", again.status, again.raw)
		}
		if rr := tt.postForm(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-web"}, "refresh_token": {rt}}); rr.status != 403 {
			t.Errorf("refresh token from a reused code still works: %d", rr.status)
		}
	})
}

func TestConcurrentTokenRequests(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	users := []string{"alice", "bob", "carol", "dave"}
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var form url.Values
			if i%2 == 0 {
				form = passwordForm(users[i%4]+"@authmesh.dev", "openid offline_access read:orders")
			} else {
				form = ccForm("orders-service", apiAud)
			}
			req, _ := http.NewRequest(http.MethodPost, tt.ts.URL+"/oauth/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	r := tt.postForm(t, passwordForm("alice@authmesh.dev", "openid offline_access"))
	tt.postForm(t, ccForm("orders-service", apiAud))
	tt.postForm(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-cli"}, "refresh_token": {r.body["refresh_token"].(string)}})
	logs := tt.logs.String()
	for _, secret := range []string{"dev-password", "orders-service-dev-secret", r.body["access_token"].(string)[:40], r.body["refresh_token"].(string)} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret %q", secret[:8])
		}
	}
	if strings.Count(logs, `"msg":"devtenant request"`) != 3 || !strings.Contains(logs, "DEVELOPMENT TENANT") {
		t.Errorf("want one line per request and the start-up warning:\n%s", logs)
	}
}

// TestGrantTypesOneTable checks that discovery, the token endpoint and the
// tenant file's validation agree, as they all read grantTypes.
func TestGrantTypesOneTable(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	var discovered []string
	for _, g := range tt.do(t, http.MethodGet, "/.well-known/openid-configuration", "", nil, nil).body["grant_types_supported"].([]any) {
		discovered = append(discovered, g.(string))
	}
	want := []string{GrantPassword, GrantPasswordRealm, GrantClientCredentials, GrantRefreshToken, GrantAuthorizationCode}
	if !reflect.DeepEqual(discovered, want) {
		t.Errorf("grant_types_supported = %v, want %v", discovered, want)
	}
	for _, g := range append(want, GrantImplicit) {
		r := tt.postForm(t, url.Values{"grant_type": {g}, "client_id": {"nope"}})
		if served := r.body["error"] != "unsupported_grant_type"; served != (g != GrantImplicit) {
			t.Errorf("%s: %d %s", g, r.status, r.raw)
		}
	}
	if got := strings.Join(grantNames(false), ", "); got != strings.Join(append(want, GrantImplicit), ", ") {
		t.Errorf("grants a client may declare: %s", got)
	}
}
