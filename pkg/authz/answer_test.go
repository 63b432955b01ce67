package authz_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
)

// TestAnswerOf: the one RFC 6750 writer, for every code.
func TestAnswerOf(t *testing.T) {
	t.Parallel()
	const realm = `Bearer realm="authmesh"`
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		wwwAuth    string
		retryAfter string
		code       string
		message    string
	}{
		{"missing token", authz.ErrMissingToken, 401, realm, "", "missing_token", "a bearer token is required"},
		{"invalid token", &authz.Error{Code: authz.CodeInvalidToken, Reason: "expired", Description: "the token has expired"},
			401, realm + `, error="invalid_token", error_description="the token has expired"`, "", "invalid_token", "the token has expired"},
		{"description sanitised", &authz.Error{Code: authz.CodeInvalidToken, Description: "a \"quoted\"\r\nSet-Cookie: x\\ é"},
			401, realm + `, error="invalid_token", error_description="a quotedSet-Cookie: x "`, "", "invalid_token", "a \"quoted\"\r\nSet-Cookie: x\\ é"},
		{"invalid token without description", authz.ErrInvalidToken, 401, realm + `, error="invalid_token", error_description="the token is invalid"`, "", "invalid_token", "the token is invalid"},
		{"missing permission", &authz.Error{Code: authz.CodeInsufficientScope, Needed: []string{"read:orders", "cancel:orders"}},
			403, realm + `, error="insufficient_scope", scope="read:orders cancel:orders"`, "", "insufficient_scope", "insufficient permissions: requires read:orders cancel:orders"},
		{"kind refused", &authz.Error{Code: authz.CodeInsufficientScope, Reason: authz.ReasonUsersOnly, Description: "only users may do this"},
			403, realm + `, error="insufficient_scope", error_description="users_only"`, "", "insufficient_scope", "only users may do this"},
		{"keys unavailable", &authz.Error{Code: authz.CodeKeysUnavailable, Reason: "revocations_unavailable"}, 503, "", "30", "temporarily_unavailable", "token verification is temporarily unavailable; retry later"},
		{"no policy", authz.ErrNoPolicy, 403, "", "", "no_policy", "access denied"},
		{"not an authz error", errors.New("boom"), 401, realm + `, error="invalid_token", error_description="the token could not be verified"`, "", "invalid_token", "the token could not be verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := authz.AnswerOf(tc.err)
			if a.Status != tc.status || a.Body.Error != tc.code || a.Body.Message != tc.message {
				t.Errorf("answer = %d %+v, want %d %s %q", a.Status, a.Body, tc.status, tc.code, tc.message)
			}
			if got := a.Header.Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wwwAuth)
			}
			if got := a.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			if got := a.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if code := authz.CodeOf(tc.err); code != "" && code.Status() != a.Status {
				t.Errorf("Code.Status() = %d, answer %d", code.Status(), a.Status)
			}
		})
	}
	if s := authz.Code("surprise").Status(); s != http.StatusInternalServerError {
		t.Errorf("unknown code status %d", s)
	}
}
