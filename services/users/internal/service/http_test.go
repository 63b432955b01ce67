package service

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

type userBody struct {
	UserID          string            `json:"user_id"`
	Email           string            `json:"email"`
	Name            string            `json:"name"`
	Roles           []string          `json:"roles"`
	Blocked         bool              `json:"blocked"`
	ShippingAddress map[string]string `json:"shipping_address"`
}

func TestHTTPEndpoints(t *testing.T) {
	s := startStack(t)
	alice, bob := s.userToken("alice@authmesh.dev"), s.userToken("bob@authmesh.dev")
	carol, dave := s.userToken("carol@authmesh.dev"), s.userToken("dave@authmesh.dev")
	m2m := s.clientToken("orders-service")
	unknown := url.PathEscape("auth0|000000000000000000000000")
	aliceEsc := url.PathEscape(aliceID)
	bobEsc := url.PathEscape(bobID)

	tests := []struct {
		name      string
		method    string
		path      string
		token     string
		body      string
		status    int
		code      string // error code for failures
		challenge string // expected WWW-Authenticate fragment
		check     func(t *testing.T, r response)
	}{
		{name: "me", method: "GET", path: "/v1/me", token: alice, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if u.UserID != aliceID || u.Email != "alice@authmesh.dev" || u.Name != "Alice Example" || !slices.Equal(u.Roles, []string{"customer"}) || u.Blocked || u.ShippingAddress != nil {
				t.Fatalf("me = %+v", u)
			}
			if !strings.Contains(string(r.Body), `"shipping_address":null`) {
				t.Fatalf("shipping_address must be present as null: %s", r.Body)
			}
		}},
		{name: "me without token", method: "GET", path: "/v1/me", status: 401, challenge: `Bearer realm="authmesh"`},
		{name: "me with garbage token", method: "GET", path: "/v1/me", token: "not.a.jwt", status: 401, code: "invalid_token", challenge: `error="invalid_token"`},
		{name: "me with an M2M token", method: "GET", path: "/v1/me", token: m2m, status: 403, code: "insufficient_scope", challenge: `error="insufficient_scope"`},
		{name: "patch me", method: "PATCH", path: "/v1/me", token: bob, status: 200,
			body: `{"name":"  Bobby  ","shipping_address":{"line1":"1 Main St","city":"Lyon","postal_code":"69001","country":"fr"}}`,
			check: func(t *testing.T, r response) {
				var u userBody
				r.JSON(t, &u)
				want := map[string]string{"line1": "1 Main St", "city": "Lyon", "postal_code": "69001", "country": "FR"}
				if u.Name != "Bobby" || u.ShippingAddress == nil || !equalMaps(u.ShippingAddress, want) || !slices.Equal(u.Roles, []string{"customer"}) {
					t.Fatalf("patched = %+v", u)
				}
			}},
		{name: "patch me is kept", method: "GET", path: "/v1/me", token: bob, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if u.Name != "Bobby" || u.ShippingAddress["city"] != "Lyon" {
				t.Fatalf("after patch = %+v", u)
			}
		}},
		{name: "patch only the name keeps the address", method: "PATCH", path: "/v1/me", token: bob, body: `{"name":"Bob"}`, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if u.Name != "Bob" || u.ShippingAddress["city"] != "Lyon" {
				t.Fatalf("after name patch = %+v", u)
			}
		}},
		{name: "patch malformed JSON", method: "PATCH", path: "/v1/me", token: bob, body: `{"name":`, status: 400, code: "malformed_json"},
		{name: "patch invalid fields", method: "PATCH", path: "/v1/me", token: bob, status: 422, code: "validation_failed",
			body: `{"shipping_address":{"line1":"","city":"Lyon","postal_code":"69001","country":"France"}}`,
			check: func(t *testing.T, r response) {
				var e struct{ Fields map[string]string }
				r.JSON(t, &e)
				if e.Fields["shipping_address.line1"] == "" || e.Fields["shipping_address.country"] == "" || len(e.Fields) != 2 {
					t.Fatalf("fields = %v", e.Fields)
				}
			}},
		{name: "patch nothing", method: "PATCH", path: "/v1/me", token: bob, body: `{}`, status: 422, code: "validation_failed"},
		{name: "patch unknown field", method: "PATCH", path: "/v1/me", token: bob, body: `{"email":"x@y.z"}`, status: 422, code: "validation_failed"},
		{name: "patch wrong type", method: "PATCH", path: "/v1/me", token: bob, body: `{"name":42}`, status: 422, code: "validation_failed"},
		{name: "patch too large", method: "PATCH", path: "/v1/me", token: bob, body: `{"name":"` + strings.Repeat("x", 70_000) + `"}`, status: 413},
		{name: "patch without update:profile", method: "PATCH", path: "/v1/me", token: m2m, body: `{"name":"x"}`, status: 403, code: "insufficient_scope"},
		{name: "list as support", method: "GET", path: "/v1/users?page=0&per_page=2", token: dave, status: 200, check: func(t *testing.T, r response) {
			var p struct {
				Users   []userBody `json:"users"`
				Page    int        `json:"page"`
				PerPage int        `json:"per_page"`
				Total   int        `json:"total"`
			}
			r.JSON(t, &p)
			if p.Total != 4 || len(p.Users) != 2 || p.PerPage != 2 || p.Page != 0 {
				t.Fatalf("page = %+v", p)
			}
		}},
		{name: "list second page", method: "GET", path: "/v1/users?page=1&per_page=3", token: dave, status: 200, check: func(t *testing.T, r response) {
			var p struct{ Users []userBody }
			r.JSON(t, &p)
			if len(p.Users) != 1 {
				t.Fatalf("page 1 = %+v", p)
			}
		}},
		{name: "list bad paging", method: "GET", path: "/v1/users?page=x&per_page=500", token: dave, status: 422, code: "validation_failed", check: func(t *testing.T, r response) {
			var e struct{ Fields map[string]string }
			r.JSON(t, &e)
			if e.Fields["page"] == "" || e.Fields["per_page"] == "" {
				t.Fatalf("fields = %v", e.Fields)
			}
		}},
		{name: "list as customer", method: "GET", path: "/v1/users", token: alice, status: 403, code: "insufficient_scope", challenge: `scope="read:users"`},
		{name: "list without token", method: "GET", path: "/v1/users", status: 401},
		{name: "get user by escaped id", method: "GET", path: "/v1/users/" + aliceEsc, token: dave, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if u.UserID != aliceID || !slices.Equal(u.Roles, []string{"customer"}) {
				t.Fatalf("user = %+v", u)
			}
		}},
		{name: "get user by raw id", method: "GET", path: "/v1/users/" + carolID, token: dave, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if u.UserID != carolID || !slices.Equal(u.Roles, []string{"admin"}) {
				t.Fatalf("user = %+v", u)
			}
		}},
		{name: "get unknown user", method: "GET", path: "/v1/users/" + unknown, token: dave, status: 404, code: "not_found"},
		{name: "get user as customer", method: "GET", path: "/v1/users/" + bobEsc, token: alice, status: 403},
		{name: "block as support", method: "POST", path: "/v1/users/" + aliceEsc + "/block", token: dave, status: 403, code: "insufficient_scope", challenge: `scope="block:users"`},
		{name: "block unknown user", method: "POST", path: "/v1/users/" + unknown + "/block", token: carol, status: 404, code: "not_found"},
		{name: "unblock unknown user", method: "POST", path: "/v1/users/" + unknown + "/unblock", token: carol, status: 404},
		{name: "block without token", method: "POST", path: "/v1/users/" + aliceEsc + "/block", status: 401},
		{name: "assign roles", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: carol, body: `{"roles":["support","customer"]}`, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if !slices.Equal(u.Roles, []string{"customer", "support"}) {
				t.Fatalf("roles = %v", u.Roles)
			}
		}},
		{name: "assign replaces roles", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: carol, body: `{"roles":["support"]}`, status: 200, check: func(t *testing.T, r response) {
			var u userBody
			r.JSON(t, &u)
			if !slices.Equal(u.Roles, []string{"support"}) {
				t.Fatalf("roles = %v", u.Roles)
			}
		}},
		{name: "assign unknown role", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: carol, body: `{"roles":["root"]}`, status: 422, code: "validation_failed", check: func(t *testing.T, r response) {
			if !strings.Contains(string(r.Body), "root") {
				t.Fatalf("body does not name the role: %s", r.Body)
			}
		}},
		{name: "assign without roles", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: carol, body: `{}`, status: 422},
		{name: "assign malformed", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: carol, body: `{"roles":[`, status: 400},
		{name: "assign to unknown user", method: "PUT", path: "/v1/users/" + unknown + "/roles", token: carol, body: `{"roles":["support"]}`, status: 404},
		{name: "assign as support", method: "PUT", path: "/v1/users/" + aliceEsc + "/roles", token: dave, body: `{"roles":["admin"]}`, status: 403, code: "insufficient_scope"},
	}
	// Sequential: later cases read what earlier ones changed.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(tt.method, tt.path, tt.token, tt.body)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Body)
			}
			if tt.code != "" {
				if got := errorCode(t, r); got != tt.code {
					t.Fatalf("error = %q, want %q: %s", got, tt.code, r.Body)
				}
			}
			if tt.challenge != "" && !strings.Contains(r.Header.Get("WWW-Authenticate"), tt.challenge) {
				t.Fatalf("WWW-Authenticate = %q, want it to contain %q", r.Header.Get("WWW-Authenticate"), tt.challenge)
			}
			if tt.status >= 400 && strings.Contains(string(r.Body), "eyJ") {
				t.Fatalf("error body echoes a token: %s", r.Body)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}

	t.Run("role assignment is the tenant's", func(t *testing.T) {
		// A token issued now carries the support role's permissions.
		tok := s.userToken("alice@authmesh.dev")
		if r := s.do("GET", "/v1/users", tok, ""); r.Status != http.StatusOK {
			t.Fatalf("alice as support: status %d: %s", r.Status, r.Body)
		}
	})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
