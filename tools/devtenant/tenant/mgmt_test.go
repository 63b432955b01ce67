package tenant

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestManagementAPI(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	users := tt.accessToken(t, ccForm("users-service", mgmtAud))
	admin := tt.accessToken(t, ccForm("tenant-admin", mgmtAud))
	api := tt.accessToken(t, ccForm("orders-service", apiAud))
	alice := "/api/v2/users/" + url.PathEscape(aliceID)

	errorCases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		errorCode                 string
	}{
		{"no token", "GET", "/api/v2/users", "", nil, 401, ""},
		{"token for another audience", "GET", "/api/v2/users", api, nil, 401, ""},
		{"garbage token", "GET", "/api/v2/users", "a.b.c", nil, 401, ""},
		{"missing scope", "GET", "/api/v2/keys/signing", users, nil, 403, "insufficient_scope"},
		{"unknown user", "GET", "/api/v2/users/" + url.PathEscape("auth0|000000000000000000000000"), users, nil, 404, "inexistent_user"},
		{"unknown field", "PATCH", alice, users, map[string]any{"favourite": "tea"}, 400, "invalid_body"},
		{"wrong type", "PATCH", alice, users, map[string]any{"blocked": "yes"}, 400, "invalid_body"},
		{"empty patch", "PATCH", alice, users, map[string]any{}, 400, "invalid_body"},
		{"bad per_page", "GET", "/api/v2/users?per_page=1000", users, nil, 400, "invalid_query_string"},
		{"unknown role", "POST", alice + "/roles", users, map[string]any{"roles": []string{"rol_nope"}}, 404, "inexistent_role"},
		{"empty roles", "POST", alice + "/roles", users, map[string]any{"roles": []string{}}, 400, "invalid_body"},
		{"unknown route", "GET", "/api/v2/clients", users, nil, 404, ""},
		{"revoke a key that is not previous", "PUT", "/api/v2/keys/signing/nope/revoke", admin, nil, 404, "inexistent_signing_key"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tt.mgmt(t, tc.method, tc.path, tc.token, tc.body)
			if r.status != tc.status || r.body["statusCode"] != float64(tc.status) || r.body["error"] != http.StatusText(tc.status) || r.body["message"] == "" {
				t.Fatalf("got %d %s, want %d in Auth0's error shape", r.status, r.raw, tc.status)
			}
			if tc.errorCode != "" && r.body["errorCode"] != tc.errorCode {
				t.Errorf("errorCode = %v, want %s", r.body["errorCode"], tc.errorCode)
			}
		})
	}

	t.Run("list with totals and search by email", func(t *testing.T) {
		t.Parallel()
		r := tt.mgmt(t, "GET", "/api/v2/users?include_totals=true&per_page=2&page=1", users, nil)
		if r.status != 200 || r.body["total"] != float64(4) || r.body["start"] != float64(2) || r.body["limit"] != float64(2) || r.body["length"] != float64(2) {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
		r = tt.mgmt(t, "GET", "/api/v2/users?q="+url.QueryEscape(`email:"dave@authmesh.dev"`), users, nil)
		var list []map[string]any
		if err := jsonUnmarshal(r.raw, &list); err != nil || len(list) != 1 || list[0]["user_id"] != "auth0|6553da60a54af58e29493994" {
			t.Fatalf("search: %s", r.raw)
		}
		u := list[0]
		for _, f := range []string{"user_id", "email", "email_verified", "name", "nickname", "blocked", "created_at", "updated_at", "identities", "app_metadata"} {
			if _, ok := u[f]; !ok {
				t.Errorf("user object lacks %s", f)
			}
		}
		if u["blocked"] != false || u["email_verified"] != true {
			t.Errorf("user = %v", u)
		}
		if _, err := time.Parse(time.RFC3339, u["created_at"].(string)); err != nil {
			t.Errorf("created_at: %v", err)
		}
		if got := r.header.Get("X-Ratelimit-Limit"); got != "1000" || r.header.Get("X-Ratelimit-Remaining") == "" || r.header.Get("X-Ratelimit-Reset") == "" {
			t.Errorf("rate-limit headers: %v", r.header)
		}
	})

	t.Run("role assignment changes the next token", func(t *testing.T) {
		t.Parallel()
		roles := tt.mgmt(t, "GET", "/api/v2/roles", users, nil)
		var list []map[string]any
		if err := jsonUnmarshal(roles.raw, &list); err != nil || len(list) != 3 {
			t.Fatalf("roles: %s", roles.raw)
		}
		ids := map[string]string{}
		for _, r := range list {
			ids[r["name"].(string)] = r["id"].(string)
			if !strings.HasPrefix(r["id"].(string), "rol_") {
				t.Errorf("role id %v", r["id"])
			}
		}
		bobPath := "/api/v2/users/" + url.PathEscape(bobID) + "/roles"
		if r := tt.mgmt(t, "POST", bobPath, users, map[string]any{"roles": []string{ids["support"]}}); r.status != 204 {
			t.Fatalf("assign: %d %s", r.status, r.raw)
		}
		if r := tt.mgmt(t, "DELETE", bobPath, users, map[string]any{"roles": []string{ids["customer"]}}); r.status != 204 {
			t.Fatalf("remove: %d %s", r.status, r.raw)
		}
		got := tt.mgmt(t, "GET", bobPath, users, nil)
		if err := jsonUnmarshal(got.raw, &list); err != nil || len(list) != 1 || list[0]["name"] != "support" {
			t.Fatalf("bob's roles: %s", got.raw)
		}
		_, claims := decodeJWT(t, tt.accessToken(t, passwordForm("bob@authmesh.dev", "read:all-orders")))
		if claims["scope"] != "read:all-orders" || !slices.Contains(claims[RolesClaim].([]any), any("support")) {
			t.Errorf("bob's new token = %v", claims)
		}
	})
}

func TestManagementRateLimit(t *testing.T) {
	t.Parallel()
	// A frozen clock at the wall clock's time: the limiter's window does not
	// move, and the tokens it dates stay valid for the Validator's wall clock.
	now := time.Now().Truncate(time.Second)
	tt := newTenant(t, func(c *Config) {
		c.ManagementRateLimit = 2
		c.ManagementRateWindow = time.Minute
		c.Now = func() time.Time { return now }
	})
	tok := tt.accessToken(t, ccForm("users-service", mgmtAud))
	for i := range 2 {
		r := tt.mgmt(t, "GET", "/api/v2/roles", tok, nil)
		if r.status != 200 || r.header.Get("X-Ratelimit-Remaining") != strconv.Itoa(1-i) {
			t.Fatalf("request %d: %d remaining=%s", i, r.status, r.header.Get("X-Ratelimit-Remaining"))
		}
	}
	r := tt.mgmt(t, "GET", "/api/v2/roles", tok, nil)
	if r.status != 429 || r.body["errorCode"] != "too_many_requests" || r.body["statusCode"] != float64(429) ||
		r.header.Get("X-Ratelimit-Remaining") != "0" || r.header.Get("X-Ratelimit-Reset") != strconv.FormatInt(now.Add(time.Minute).Unix(), 10) {
		t.Fatalf("got %d %s %v", r.status, r.raw, r.header)
	}
	// Limits are per client.
	if r := tt.mgmt(t, "GET", "/api/v2/roles", tt.accessToken(t, ccForm("tenant-admin", mgmtAud)), nil); r.status != 200 {
		t.Errorf("other client: %d", r.status)
	}
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir() // fresh keys: this test is about them
	tt := newTenantOn(t, dataDir)
	kids := func(tt *testTenant) []string {
		var out []string
		set := tt.jwks(t)
		for _, k := range set.Keys {
			if k.KeyID == "" || k.Algorithm != "RS256" || k.Use != "sig" || len(k.Certificates) != 1 {
				t.Errorf("key %+v", k)
			}
			out = append(out, k.KeyID)
		}
		return out
	}
	kidOf := func(tok string) string { h, _ := decodeJWT(t, tok); return h["kid"].(string) }

	initial := kids(tt)
	if len(initial) != 2 {
		t.Fatalf("JWKS has %d keys, want current and next", len(initial))
	}
	old := tt.accessToken(t, passwordForm("alice@authmesh.dev", "openid"))
	if kidOf(old) != initial[0] {
		t.Fatalf("signed with %s, want the current key %s", kidOf(old), initial[0])
	}
	info, err := os.Stat(filepath.Join(dataDir, keysFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v", err, info)
	}

	// Rotate through the Management API: next becomes current, old current stays as previous.
	admin := tt.accessToken(t, ccForm("tenant-admin", mgmtAud))
	if r := tt.mgmt(t, "POST", "/api/v2/keys/signing/rotate", admin, nil); r.status != 201 || r.body["kid"] != initial[1] {
		t.Fatalf("rotate: %d %s", r.status, r.raw)
	}
	rotated := kids(tt)
	if len(rotated) != 3 || rotated[0] != initial[1] || rotated[2] != initial[0] {
		t.Fatalf("after rotation JWKS = %v (was %v)", rotated, initial)
	}
	fresh := tt.accessToken(t, passwordForm("alice@authmesh.dev", "openid"))
	if kidOf(fresh) != initial[1] {
		t.Errorf("new token signed with %s, want %s", kidOf(fresh), initial[1])
	}
	for _, tok := range []string{old, fresh} {
		if err := tt.verifyWithJWKS(t, tok); err != nil {
			t.Errorf("token does not verify after rotation: %v", err)
		}
	}
	// Only the previous key can be revoked.
	if r := tt.mgmt(t, "PUT", "/api/v2/keys/signing/"+rotated[0]+"/revoke", admin, nil); r.status != 400 {
		t.Errorf("revoking the current key: %d %s", r.status, r.raw)
	}
	var listed []map[string]any
	if err := jsonUnmarshal(tt.mgmt(t, "GET", "/api/v2/keys/signing", admin, nil).raw, &listed); err != nil || len(listed) != 3 {
		t.Fatalf("key list: %v", listed)
	}

	// Restart on the same data dir: same keys.
	tt.ts.Close()
	again := newTenantOn(t, dataDir)
	if got := kids(again); !slices.Equal(got, rotated) {
		t.Errorf("after restart JWKS = %v, want %v", got, rotated)
	}
	if err := again.verifyWithJWKS(t, old); err != nil {
		t.Errorf("token from before the restart: %v", err)
	}
	if r := again.do(t, "GET", "/userinfo", "", nil, map[string]string{"Authorization": "Bearer " + old}); r.status != 200 {
		t.Errorf("userinfo with a previous-key token: %d %s", r.status, r.raw)
	}

	// Revoke the previous key (in-process API): it leaves the JWKS and its tokens stop verifying.
	if err := again.srv.RevokePreviousKey(); err != nil {
		t.Fatal(err)
	}
	if got := kids(again); len(got) != 2 || slices.Contains(got, initial[0]) {
		t.Errorf("after revocation JWKS = %v", got)
	}
	if err := again.verifyWithJWKS(t, old); err == nil {
		t.Error("a token signed with the revoked key still verifies")
	}
	if r := again.do(t, "GET", "/userinfo", "", nil, map[string]string{"Authorization": "Bearer " + old}); r.status != 401 {
		t.Errorf("userinfo with a revoked-key token: %d", r.status)
	}
	if err := again.srv.RevokePreviousKey(); err != ErrNoPreviousKey {
		t.Errorf("second revoke: %v", err)
	}
	if err := again.srv.RotateSigningKey(); err != nil {
		t.Fatal(err)
	}
	if got := kids(again); len(got) != 3 {
		t.Errorf("after a second rotation: %v", got)
	}
}
