package tenant

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
)

// tenantFileWith writes deploy/tenant.yaml with each old replaced by new
// and returns its path (a test tenant file: the dev directory stays
// deploy/dev).
func tenantFileWith(t *testing.T, oldNew ...string) string {
	t.Helper()
	b, err := os.ReadFile(testTenantFile)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("tenant.yaml lacks %q", oldNew[i])
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	path := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func withTenantFile(path string) func(*Config) { return func(c *Config) { c.TenantFile = path } }

const dialectLine = "token_dialect: access_token_authz"

// TestRFC9068Dialect: an API with token_dialect rfc9068_profile(_authz) gets
// Auth0's RFC 9068 tokens — typ at+jwt, client_id instead of azp, a jti, no
// gty, permissions only with _authz — and pkg/authz accepts them, also when
// it requires typ at+jwt.
func TestRFC9068Dialect(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"rfc9068_profile_authz", "rfc9068_profile"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			tt := newTenant(t, withTenantFile(tenantFileWith(t, dialectLine, "token_dialect: "+dialect)))
			v := tt.authzValidator(t, authz.WithRequiredType(authz.AccessTokenType))
			user := tt.accessToken(t, passwordForm("carol@authmesh.dev", "openid refund:invoices"))
			m2m := tt.accessToken(t, ccForm("orders-service", apiAud))
			jtis := map[string]bool{}
			for name, tok := range map[string]string{"user": user, "m2m": m2m} {
				hdr, c := decodeJWT(t, tok)
				_, hasAZP := c["azp"]
				_, hasGTY := c["gty"]
				_, hasPerms := c["permissions"]
				jti, _ := c["jti"].(string)
				if hdr["typ"] != "at+jwt" || hasAZP || hasGTY || len(jti) < 16 || jtis[jti] || hasPerms != strings.HasSuffix(dialect, "_authz") {
					t.Errorf("%s token: header %v, claims %v", name, hdr, c)
				}
				jtis[jti] = true
				cl, err := v.Validate(context.Background(), tok)
				if err != nil {
					t.Fatalf("%s token refused by pkg/authz: %v", name, err)
				}
				if want := map[string]string{"user": "authmesh-cli", "m2m": "orders-service"}[name]; cl.Client() != want || cl.ClientID != want || cl.AZP != "" {
					t.Errorf("%s token: Client() = %q, claims %+v", name, cl.Client(), cl)
				}
			}
			if cl, _ := v.Validate(context.Background(), m2m); !cl.IsM2M() || authz.RequireAll("cancel:orders").Clients("orders-service").Authorize(cl) != nil {
				t.Errorf("the RFC 9068 M2M token is not orders-service's: %+v", cl)
			}
			// Management API tokens keep the Auth0 profile: the dialect is the API's.
			if hdr, c := decodeJWT(t, tt.accessToken(t, ccForm("users-service", mgmtAud))); hdr["typ"] != "JWT" || c["azp"] != "users-service" {
				t.Errorf("management token: %v %v", hdr, c)
			}
		})
	}
	// The contract's tenant stays in the Auth0 profile, refused by a
	// validator that requires at+jwt.
	tt := newTenant(t, nil)
	var ae *authz.Error
	if _, err := tt.authzValidator(t, authz.WithRequiredType(authz.AccessTokenType)).Validate(context.Background(),
		tt.accessToken(t, ccForm("orders-service", apiAud))); !errors.As(err, &ae) || ae.Reason != "typ" {
		t.Errorf("Auth0-profile token under WithRequiredType(at+jwt): %v", err)
	}
}

func TestUnknownTokenDialectRefused(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Issuer: testIssuer, TenantFile: tenantFileWith(t, dialectLine, "token_dialect: rfc9068"),
		DevDir: devDir, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `token_dialect "rfc9068"`) || !strings.Contains(err.Error(), "rfc9068_profile_authz") {
		t.Fatalf("err = %v", err)
	}
}

// TestResourceParameter: Auth0's Resource Parameter Compatibility Profile.
// With tenant.resource_parameter_profile compatibility, resource (RFC 8707)
// names the API when audience is absent; audience wins when both are sent;
// without the profile resource is ignored.
func TestResourceParameter(t *testing.T) {
	t.Parallel()
	// deploy/tenant.yaml turns the profile on.
	const profile = "resource_parameter_profile: compatibility"
	compat := newTenant(t, nil)
	plain := newTenant(t, withTenantFile(tenantFileWith(t, profile, "resource_parameter_profile: audience")))
	with := func(v url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, vs := range v {
			out[k] = vs
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	aud := func(t *testing.T, r response) any {
		t.Helper()
		if r.status != http.StatusOK {
			return r.body["error_description"]
		}
		_, c := decodeJWT(t, r.body["access_token"].(string))
		return c["aud"]
	}
	cc, pw := ccForm("orders-service", apiAud), passwordForm("alice@authmesh.dev", "read:orders")
	for _, tc := range []struct {
		name   string
		tt     *testTenant
		form   url.Values
		status int
		aud    any
	}{
		{"client credentials, resource alone", compat, with(cc, "audience", "", "resource", apiAud), 200, apiAud},
		{"password, resource alone", compat, with(pw, "audience", "", "resource", apiAud), 200, apiAud},
		{"audience wins over an unknown resource", compat, with(cc, "resource", "https://other.example/"), 200, apiAud},
		{"audience wins over a known resource", compat, with(cc, "audience", mgmtAud, "client_id", "users-service", "client_secret", "users-service-dev-secret", "resource", apiAud), 200, mgmtAud},
		{"unknown resource alone", compat, with(cc, "audience", "", "resource", "https://other.example/"), 403, "Service not found: https://other.example/"},
		{"profile off: resource ignored", plain, with(cc, "audience", "", "resource", apiAud), 403, "No audience parameter was provided, and no default audience has been configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.tt.postForm(t, tc.form)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.raw, tc.status)
			}
			if got := aud(t, r); got != tc.aud {
				t.Errorf("aud/error = %v, want %v", got, tc.aud)
			}
		})
	}
	t.Run("authorize: resource selects the API of the code's tokens", func(t *testing.T) {
		const cb = "http://localhost:8404/callback"
		verifier, challenge := pkcePair("r")
		form := url.Values{"response_type": {"code"}, "client_id": {"authmesh-web"}, "redirect_uri": {cb},
			"scope": {"openid read:orders"}, "resource": {apiAud}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
			"username": {"alice@authmesh.dev"}, "password": {"dev-password"}}
		r := compat.do(t, http.MethodPost, "/authorize", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), nil)
		loc, err := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusFound || err != nil {
			t.Fatalf("authorize: %d %s", r.status, r.raw)
		}
		tok := compat.postForm(t, url.Values{"grant_type": {"authorization_code"}, "client_id": {"authmesh-web"},
			"code": {loc.Query().Get("code")}, "redirect_uri": {cb}, "code_verifier": {verifier}})
		if tok.status != 200 {
			t.Fatalf("code exchange: %d %s", tok.status, tok.raw)
		}
		if _, c := decodeJWT(t, tok.body["access_token"].(string)); !strings.Contains(strings.Join(anyStrings(c["aud"]), " "), apiAud) {
			t.Errorf("aud = %v, want the API", c["aud"])
		}
	})
	if _, err := New(Config{Issuer: testIssuer, TenantFile: tenantFileWith(t, profile, "resource_parameter_profile: rfc8707"),
		DevDir: devDir, DataDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "resource_parameter_profile") {
		t.Errorf("unknown profile: %v", err)
	}
}

func anyStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, s := range v {
			if s, ok := s.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// authzValidator is pkg/authz's validator as the services configure it
// (issuer http://localhost:8400/, the API audience), keys from this tenant.
func (tt *testTenant) authzValidator(t *testing.T, opts ...authz.Option) *authz.Validator {
	t.Helper()
	kp, err := authz.NewKeyProvider(authz.WithJWKSURL(tt.ts.URL + "/.well-known/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(kp, append([]authz.Option{authz.WithIssuers(testIssuer), authz.WithAudiences(apiAud)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
