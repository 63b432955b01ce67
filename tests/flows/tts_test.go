package flows

import (
	"net/http"
	"strings"
	"testing"
)

// TestTransactionTokenServiceDown: with the Transaction Token Service gone, a
// request whose transaction tokens are cached still goes through, events
// already queued are still consumed (verifying needs only the service's
// cached keys), and a request that needs a new transaction token answers 503
// with Retry-After — never 401 or 500 — until the service is back.
func TestTransactionTokenServiceDown(t *testing.T) {
	setup(t)
	warm, cold := token(t, alice), token(t, dave)
	first := placeOrder(t, warm, mugs(1)) // exchanges warm's token for its hops
	waitInvoice(t, warm, first.ID, "open", flowDeadline)

	stop(t, "tts")
	t.Cleanup(func() { ensureRunning(t) })

	second := placeOrder(t, warm, mugs(2))
	waitInvoice(t, warm, second.ID, "open", flowDeadline)

	var before []order
	callJSON(t, http.MethodGet, "orders", "/v1/orders", cold, nil, http.StatusOK, &before)
	r := call(t, http.MethodPost, "orders", "/v1/orders", cold, mugs(1))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("a new caller while the service is down: %s (Retry-After %q), want 503 with Retry-After", r, r.header.Get("Retry-After"))
	}
	if strings.Contains(string(r.body), cold) {
		t.Fatal("the answer quotes the token")
	}
	var after []order
	callJSON(t, http.MethodGet, "orders", "/v1/orders", cold, nil, http.StatusOK, &after)
	if len(after) != len(before) {
		t.Fatalf("the refused request left an order behind: %d orders before, %d after", len(before), len(after))
	}

	start(t, "tts")
	eventually(t, flowDeadline, "a new caller is served once the service is back", func() (bool, string) {
		r := call(t, http.MethodPost, "orders", "/v1/orders", cold, mugs(1))
		return r.status == http.StatusCreated, r.String()
	})
}
