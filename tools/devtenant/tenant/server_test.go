package tenant

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestDiscoveryUsesIssuerNotServedURL(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	r := tt.do(t, "GET", "/.well-known/openid-configuration", "", nil, nil)
	want := map[string]string{
		"issuer": testIssuer, "jwks_uri": testIssuer + ".well-known/jwks.json", "token_endpoint": testIssuer + "oauth/token",
		"authorization_endpoint": testIssuer + "authorize", "userinfo_endpoint": testIssuer + "userinfo",
	}
	for k, v := range want {
		if r.body[k] != v {
			t.Errorf("%s = %v, want %s", k, r.body[k], v)
		}
	}
	jw := tt.do(t, "GET", "/.well-known/jwks.json", "", nil, nil)
	if !strings.Contains(jw.header.Get("Cache-Control"), "max-age=15") {
		t.Errorf("JWKS Cache-Control = %q", jw.header.Get("Cache-Control"))
	}
	if h := tt.do(t, "GET", "/healthz", "", nil, nil); h.status != 200 {
		t.Errorf("healthz %d", h.status)
	}
}

func TestCORSForTheSPA(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	tests := []struct {
		name, origin, path string
		allowed            bool
	}{
		{"token endpoint from the SPA", "http://localhost:8404", "/oauth/token", true},
		{"userinfo from the SPA", "http://localhost:8404", "/userinfo", true},
		{"other origin", "https://evil.example", "/oauth/token", false},
		{"management API is not for browsers", "http://localhost:8404", "/api/v2/users", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tt.do(t, http.MethodOptions, tc.path, "", nil, map[string]string{"Origin": tc.origin, "Access-Control-Request-Method": "POST"})
			got := r.header.Get("Access-Control-Allow-Origin")
			if tc.allowed != (got == tc.origin) || (tc.allowed && r.status != http.StatusNoContent) {
				t.Errorf("status %d, Allow-Origin %q", r.status, got)
			}
		})
	}
}

func TestUserinfo(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	withOpenID := tt.accessToken(t, passwordForm("alice@authmesh.dev", "openid email"))
	withoutOpenID := tt.accessToken(t, passwordForm("alice@authmesh.dev", "read:orders"))
	r := tt.do(t, "GET", "/userinfo", "", nil, map[string]string{"Authorization": "Bearer " + withOpenID})
	if r.status != 200 || r.body["sub"] != aliceID || r.body["email"] != "alice@authmesh.dev" || r.body["name"] != nil {
		t.Errorf("userinfo: %d %s", r.status, r.raw)
	}
	for name, hdr := range map[string]string{"no openid": "Bearer " + withoutOpenID, "none": "", "garbage": "Bearer x.y.z"} {
		if r := tt.do(t, "GET", "/userinfo", "", nil, map[string]string{"Authorization": hdr}); r.status != 401 {
			t.Errorf("%s: %d", name, r.status)
		}
	}
}

// TestUserinfoRefusesOtherTokens signs tokens with the tenant's own key that
// differ from a good one in one claim: only the good one gets a profile.
func TestUserinfoRefusesOtherTokens(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	now := time.Now()
	claims := func(change func(map[string]any)) map[string]any {
		c := map[string]any{"iss": testIssuer, "sub": aliceID, "aud": []string{apiAud, testIssuer + "userinfo"},
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "azp": "authmesh-cli", "scope": "openid email"}
		change(c)
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(map[string]any)
		status int
	}{
		{"good", func(map[string]any) {}, http.StatusOK},
		{"another audience", func(c map[string]any) { c["aud"] = apiAud }, http.StatusUnauthorized},
		{"the Management API's audience", func(c map[string]any) { c["aud"] = mgmtAud }, http.StatusUnauthorized},
		{"another issuer", func(c map[string]any) { c["iss"] = "https://evil.example/" }, http.StatusUnauthorized},
		{"expired", func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}, http.StatusUnauthorized},
		{"no expiry", func(c map[string]any) { delete(c, "exp") }, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok, err := tt.srv.keys.sign(claims(tc.change))
			if err != nil {
				t.Fatal(err)
			}
			r := tt.do(t, http.MethodGet, "/userinfo", "", nil, map[string]string{"Authorization": "Bearer " + tok})
			if r.status != tc.status || (tc.status == http.StatusOK && r.body["email"] != "alice@authmesh.dev") {
				t.Errorf("got %d %s, want %d", r.status, r.raw, tc.status)
			}
			if tc.status == http.StatusUnauthorized && r.body["error"] != "invalid_token" {
				t.Errorf("error = %v", r.body["error"])
			}
		})
	}
}

func TestOtherIssuerDerivesManagementAudience(t *testing.T) {
	t.Parallel()
	const iss = "http://127.0.0.1:9400/"
	srv, err := New(Config{Issuer: iss, TenantFile: testTenantFile, DevDir: devDir, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := srv.IssueClientToken("users-service", iss+"api/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if _, c := decodeJWT(t, tok); c["iss"] != iss || c["aud"] != iss+"api/v2/" {
		t.Errorf("claims = %v", c)
	}
}

func TestIssueInProcess(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	tok, err := tt.srv.IssueUserToken("dave@authmesh.dev", "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, c := decodeJWT(t, tok)
	if c["sub"] != "auth0|6553da60a54af58e29493994" || c["gty"] != "password" || !strings.Contains(c["scope"].(string), "read:all-orders") || strings.Contains(c["scope"].(string), "refund:invoices") {
		t.Errorf("user token claims = %v", c)
	}
	if err := tt.verifyWithJWKS(t, tok); err != nil {
		t.Error(err)
	}
	m2m, err := tt.srv.IssueClientToken("billing-service", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, c := decodeJWT(t, m2m); c["sub"] != "billing-service@clients" || c["scope"] != "read:all-invoices refund:invoices" || c["aud"] != apiAud {
		t.Errorf("client token claims = %v", c)
	}
	for name, err := range map[string]error{
		"unknown user":   second(tt.srv.IssueUserToken("nobody@authmesh.dev", "", "")),
		"unknown client": second(tt.srv.IssueClientToken("nope", "")),
		"no grant":       second(tt.srv.IssueClientToken("billing-service", mgmtAud)),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func second(_ string, err error) error { return err }

// TestConfigValidation breaks the real tenant files one way at a time: each
// must be refused with the file, the entry and a fix named.
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	orig, err := os.ReadFile(testTenantFile)
	if err != nil {
		t.Fatal(err)
	}
	users, _ := os.ReadFile(filepath.Join(devDir, usersFile))
	secrets, _ := os.ReadFile(filepath.Join(devDir, secretsFile))
	keywords, _ := os.ReadFile(filepath.Join(devDir, keywordsFile))
	tests := []struct {
		name       string
		file       string // which file to change
		old, new   string
		issuer     string
		wantInErr  []string
		wantInFile string
	}{
		{"role permission not in the API", "tenant.yaml",
			"{permission_name: read:profile, resource_server_identifier: https://api.authmesh.dev}\n      - {permission_name: update:profile",
			"{permission_name: read:everything, resource_server_identifier: https://api.authmesh.dev}\n      - {permission_name: update:profile",
			"", []string{`roles[0] "customer"`, `"read:everything"`, "fix:"}, "tenant.yaml"},
		{"grant for an unknown client", "tenant.yaml", "- client_id: billing-service", "- client_id: billing-svc", "",
			[]string{`client_id "billing-svc"`, "unknown client", "fix:"}, "tenant.yaml"},
		{"grant for an unknown audience", "tenant.yaml", "audience: https://api.authmesh.dev\n    scope:\n      - read:all-invoices", "audience: https://api.example\n    scope:\n      - read:all-invoices", "",
			[]string{"https://api.example", "unknown audience", "fix:"}, "tenant.yaml"},
		{"duplicate role name", "tenant.yaml", "- name: support", "- name: customer", "",
			[]string{"duplicate role name", "fix:"}, "tenant.yaml"},
		{"duplicate client name", "tenant.yaml", "- name: billing-service", "- name: orders-service", "",
			[]string{"duplicate client name", "fix:"}, "tenant.yaml"},
		{"unknown grant type", "tenant.yaml", "      - authorization_code\n      - refresh_token", "      - authorization_code\n      - device_code", "",
			[]string{`clients[1] "authmesh-web"`, `unknown grant type "device_code"`, "fix: use one of password, " + GrantPasswordRealm + ", client_credentials, refresh_token, authorization_code, implicit"}, "tenant.yaml"},
		{"client_credentials for a public client", "tenant.yaml", "      - authorization_code\n      - refresh_token", "      - authorization_code\n      - client_credentials", "",
			[]string{`clients[1] "authmesh-web"`, "client_credentials needs a confidential client", "fix:"}, "tenant.yaml"},
		{"HS256 API", "tenant.yaml", "signing_alg: RS256", "signing_alg: HS256", "",
			[]string{"HS256", "fix: use RS256"}, "tenant.yaml"},
		{"user with an unknown role", "users.yaml", "roles: [support]", "roles: [superuser]", "",
			[]string{`"dave@authmesh.dev"`, `unknown role "superuser"`, "fix:"}, "users.yaml"},
		{"bad user id", "users.yaml", "auth0|6553da60a54af58e29493991", "auth0|alice", "",
			[]string{"auth0|alice", "24 lowercase hex"}, "users.yaml"},
		{"duplicate email", "users.yaml", "email: bob@authmesh.dev", "email: alice@authmesh.dev", "",
			[]string{"duplicate email", "fix:"}, "users.yaml"},
		{"missing secret", "client-secrets.yaml", "  tenant-admin: tenant-admin-dev-secret\n", "", "",
			[]string{`"tenant-admin"`, "no secret", "fix:"}, "client-secrets.yaml"},
		{"secret for a public client", "client-secrets.yaml", "client_secrets:\n", "client_secrets:\n  authmesh-web: some-secret-value\n", "",
			[]string{"authmesh-web", "public", "fix:"}, "client-secrets.yaml"},
		{"keyword without value", "keywords.yaml", "SPA_ORIGIN: http://localhost:8404\n", "", "",
			[]string{"##SPA_ORIGIN##", "fix: add SPA_ORIGIN"}, "tenant.yaml"},
		{"management audience not this issuer's", "keywords.yaml", "SPA_ORIGIN:", "AUTH0_MANAGEMENT_AUDIENCE: http://localhost:8400/api/v2/\nSPA_ORIGIN:", "http://localhost:9999/",
			[]string{"http://localhost:8400/api/v2/", "unknown audience", "AUTH0_MANAGEMENT_AUDIENCE"}, "tenant.yaml"},
		{"issuer without trailing slash", "", "", "", "http://localhost:8400",
			[]string{"issuer", "ending in /"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dev := filepath.Join(dir, "dev")
			if err := os.Mkdir(dev, 0o700); err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{"tenant.yaml": orig, "users.yaml": users, "client-secrets.yaml": secrets, "keywords.yaml": keywords}
			if tc.file != "" {
				if !strings.Contains(string(files[tc.file]), tc.old) {
					t.Fatalf("%s does not contain %q", tc.file, tc.old)
				}
				files[tc.file] = []byte(strings.Replace(string(files[tc.file]), tc.old, tc.new, 1))
			}
			for name, b := range files {
				path := filepath.Join(dev, name)
				if name == "tenant.yaml" {
					path = filepath.Join(dir, name)
				}
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			issuer := testIssuer
			if tc.issuer != "" {
				issuer = tc.issuer
			}
			_, err := New(Config{Issuer: issuer, TenantFile: filepath.Join(dir, "tenant.yaml"), DevDir: dev, DataDir: filepath.Join(dir, "data")})
			if err == nil {
				t.Fatal("New accepted a broken configuration")
			}
			for _, want := range append(tc.wantInErr, tc.wantInFile) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}
