package service

import (
	"net/http"
	"testing"

	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// TestRFC9068Tokens: with the API in Auth0's RFC 9068 profile (typ at+jwt,
// client_id instead of azp, no gty), billing still boots — its NATS
// connection authenticates with an RFC 9068 client-credentials token, which
// the TTS's callout maps by client_id — and its HTTP edge admits users.
func TestRFC9068Tokens(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, ttstest.RFC9068)
	ttstest.RequireRFC9068(t, s.tokens["alice"])
	if status, _, _, _ := s.do(http.MethodGet, "/v1/invoices", "alice"); status != http.StatusOK {
		t.Fatalf("list invoices with an RFC 9068 token: %d", status)
	}
	if status, _, _, _ := s.do(http.MethodPost, "/v1/invoices/inv_nope/refund", "alice"); status != http.StatusForbidden {
		t.Fatalf("refund as a customer: %d, want 403 (permissions still decide)", status)
	}
}
