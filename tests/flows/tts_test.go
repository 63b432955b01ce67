package flows

import (
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestTransactionTokenServiceDown: with the Transaction Token Service gone, a
// request whose transaction tokens are cached still goes through, events
// already queued are still consumed (verifying needs only the service's
// cached keys), and a request that needs a new transaction token answers 503
// with Retry-After — never 401 or 500 — until the service is back.
func TestTransactionTokenServiceDown(t *testing.T) {
	setup(t)
	warm, cold := api.Token(t, apiclient.Alice), api.Token(t, apiclient.Dave)
	first := api.PlaceOrder(t, warm, apiclient.Mugs(1)) // exchanges warm's token for its hops
	api.WaitInvoice(t, warm, first.ID, "open", apiclient.FlowDeadline)

	stop(t, "tts")
	t.Cleanup(func() { ensureRunning(t) })

	second := api.PlaceOrder(t, warm, apiclient.Mugs(2))
	api.WaitInvoice(t, warm, second.ID, "open", apiclient.FlowDeadline)

	before := api.OrdersOf(t, cold)
	r := api.Call(t, http.MethodPost, "orders", "/v1/orders", cold, apiclient.Mugs(1))
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("a new caller while the service is down: %s (Retry-After %q), want 503 with Retry-After", r, r.Header.Get("Retry-After"))
	}
	if strings.Contains(string(r.Body), cold) {
		t.Fatal("the answer quotes the token")
	}
	after := api.OrdersOf(t, cold)
	if len(after) != len(before) {
		t.Fatalf("the refused request left an order behind: %d orders before, %d after", len(before), len(after))
	}

	start(t, "tts")
	apiclient.Eventually(t, apiclient.FlowDeadline, "a new caller is served once the service is back", func() (bool, string) {
		r := api.Call(t, http.MethodPost, "orders", "/v1/orders", cold, apiclient.Mugs(1))
		return r.Status == http.StatusCreated, r.String()
	})
}
