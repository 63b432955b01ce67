package authz_test

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMiddlewareResponses(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	e, _ := newEcho(t, v)
	good := iss.Token(t, nil)
	// A service's M2M token holding exactly the permission of the route: the
	// policy admits users only, so no scope lets it in.
	blocker := iss.M2MToken(t, "users-service", "block:users")

	tests := []struct {
		name, method, path, token string
		hdr                       []string
		status                    int
		wwwAuth, code             string
	}{
		{"valid", "GET", "/v1/me", good, nil, 200, "", ""},
		{"no token", "GET", "/v1/me", "", nil, 401, `Bearer realm="authmesh"`, "missing_token"},
		{"basic scheme", "GET", "/v1/me", "", []string{"Authorization", "Basic dTpw"}, 401, `Bearer realm="authmesh"`, "missing_token"},
		{"garbage token", "GET", "/v1/me", "abc.def.ghi", nil, 401, `Bearer realm="authmesh", error="invalid_token", error_description="the token header is not JSON"`, "invalid_token"},
		{"missing permission", "POST", "/v1/users/x/block", good, nil, 403, `Bearer realm="authmesh", error="insufficient_scope", scope="block:users"`, "insufficient_scope"},
		{"m2m token on a users-only route", "POST", "/v1/users/x/block", blocker, nil, 403, `Bearer realm="authmesh", error="insufficient_scope", error_description="users_only"`, "insufficient_scope"},
		{"public", "GET", "/v1/catalog", "", nil, 200, "", ""},
		{"route without policy", "GET", "/v1/forgotten", good, nil, 403, "", "no_policy"},
		{"unknown route is 404", "GET", "/v1/nope", "", nil, 404, "", ""},
		{"wrong method is 405", "DELETE", "/v1/me", "", nil, 405, "", ""},
		{"cors preflight", "OPTIONS", "/v1/me", "", []string{"Origin", "http://localhost:8404", "Access-Control-Request-Method", "GET"}, 204, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := do(e, tc.method, tc.path, tc.token, tc.hdr...)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wwwAuth)
			}
			if tc.code != "" {
				var body map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("body %q: %v", rec.Body, err)
				}
				if body["error"] != tc.code || body["message"] == "" {
					t.Errorf("body = %v, want error %q and a message", body, tc.code)
				}
				if got := rec.Header().Get("Cache-Control"); got != "no-store" {
					t.Errorf("Cache-Control = %q, want no-store", got)
				}
			}
			if tc.token != "" && strings.Contains(rec.Body.String()+rec.Header().Get("WWW-Authenticate"), tc.token) {
				t.Error("response echoes the token")
			}
		})
	}
}
