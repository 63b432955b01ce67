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
		{"missing token saying which", &authz.Error{Code: authz.CodeMissingToken, Description: "a transaction token (Txn-Token) is required"},
			401, realm, "", "missing_token", "a transaction token (Txn-Token) is required"},
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
			if code := authz.CodeOfAnswer(a.Body.Error); code.Status() != a.Status || authz.AnswerOf(&authz.Error{Code: code}).Body.Error != a.Body.Error {
				t.Errorf("CodeOfAnswer(%q) = %q, answered %d", a.Body.Error, code, code.Status())
			}
		})
	}
	if s := authz.Code("surprise").Status(); s != http.StatusInternalServerError {
		t.Errorf("unknown code status %d", s)
	}
}

// TestCodeOfAnswer: every code reads back from its answer's body error (and
// from its own name); anything else names no code.
func TestCodeOfAnswer(t *testing.T) {
	t.Parallel()
	for _, c := range []authz.Code{authz.CodeMissingToken, authz.CodeInvalidToken, authz.CodeInsufficientScope,
		authz.CodeKeysUnavailable, authz.CodeNoPolicy, authz.CodeInvalidDPoPProof, authz.CodeUseDPoPNonce, authz.CodeInvalidRequest} {
		if got := authz.CodeOfAnswer(authz.AnswerOf(&authz.Error{Code: c}).Body.Error); got != c {
			t.Errorf("%s answered, read back as %q", c, got)
		}
		if got := authz.CodeOfAnswer(string(c)); got != c {
			t.Errorf("%s read back as %q", c, got)
		}
	}
	for _, s := range []string{"", "internal_error", "invalid_client", "server_error", "Invalid_Token"} {
		if got := authz.CodeOfAnswer(s); got != "" {
			t.Errorf("CodeOfAnswer(%q) = %q, want none", s, got)
		}
	}
}
