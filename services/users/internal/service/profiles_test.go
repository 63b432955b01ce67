package service

import (
	"net/http"
	"testing"

	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// TestRFC9068Tokens: with the API in Auth0's RFC 9068 profile (typ at+jwt,
// client_id instead of azp, no gty), users still boots — its NATS
// connection authenticates with an RFC 9068 client-credentials token, which
// the TTS's callout maps by client_id — and its HTTP edge admits users by
// their permissions.
func TestRFC9068Tokens(t *testing.T) {
	t.Parallel()
	s := startStackWith(t, ttstest.RFC9068)
	alice := s.userToken("alice@authmesh.dev")
	ttstest.RequireRFC9068(t, alice)
	if r := s.do(http.MethodGet, "/v1/me", alice, ""); r.Status != http.StatusOK {
		t.Fatalf("GET /v1/me: %d %s", r.Status, r.Body)
	}
	if r := s.do(http.MethodGet, "/v1/users", alice, ""); r.Status != http.StatusForbidden {
		t.Fatalf("GET /v1/users as a customer: %d, want 403", r.Status)
	}
	if r := s.do(http.MethodGet, "/v1/users", s.userToken("carol@authmesh.dev"), ""); r.Status != http.StatusOK {
		t.Fatalf("GET /v1/users as admin: %d %s", r.Status, r.Body)
	}
}
