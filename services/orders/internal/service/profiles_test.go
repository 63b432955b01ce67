package service_test

import (
	"net/http"
	"testing"

	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// TestRFC9068Tokens: with the API in Auth0's RFC 9068 profile (typ at+jwt,
// client_id instead of azp, no gty), orders still boots — its NATS
// connection authenticates with an RFC 9068 client-credentials token, which
// the TTS's callout maps by client_id — its HTTP edge admits users, and an
// order placed with such a token reaches users and billing: the exchange
// takes an RFC 9068 subject and actor token.
func TestRFC9068Tokens(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, ttstest.RFC9068)
	alice := s.token("alice@authmesh.dev")
	ttstest.RequireRFC9068(t, alice)
	o := s.placeOrder(alice, `{"items":[{"sku":"kettle","quantity":1}]}`)
	if r := s.do(http.MethodGet, "/v1/orders/"+o.ID, alice, ""); r.Status != http.StatusOK {
		t.Fatalf("get own order: %d %s", r.Status, r.Body)
	}
}
