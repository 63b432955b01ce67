package flows

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestTransactionTokenServiceDown: with the Transaction Token Service gone, a
// request whose transaction tokens are cached still goes through, events
// already queued are still consumed (verifying needs only the service's
// cached keys), and a request that needs a new transaction token answers 503
// with Retry-After — never 401 or 500 — until the service is back. The TTS
// also answers the NATS auth callout: the services' connections, made
// before, stay up (the order above travels over them), but a new connection
// with a valid client token is refused until the TTS is back.
func TestTransactionTokenServiceDown(t *testing.T) {
	setup(t)
	warm, cold := api.Token(t, apiclient.Alice), api.Token(t, apiclient.Dave)
	first := api.PlaceOrder(t, warm, apiclient.Mugs(1)) // exchanges warm's token for its hops
	api.WaitInvoice(t, warm, first.ID, "open", apiclient.FlowDeadline)
	ordersToken := clientCredentials(t, "orders-service", "orders-service-dev-secret")
	nc, err := natsConnect(t, ordersToken)
	if err != nil {
		t.Fatalf("a new NATS connection with orders' client token while the TTS is up: %v", err)
	}
	nc.Close()

	stop(t, "tts")
	t.Cleanup(func() { ensureRunning(t) })
	if nc, err := natsConnect(t, ordersToken); err == nil {
		nc.Close()
		t.Fatal("a new NATS connection with orders' client token got in while the TTS (the auth callout) is down")
	}

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
	if nc, err := natsConnect(t, ordersToken); err != nil {
		t.Fatalf("a new NATS connection with orders' client token once the TTS is back: %v", err)
	} else {
		nc.Close()
	}
}

// natsConnect opens a NATS connection to the stack with tok, as a service
// does, without retrying.
func natsConnect(t *testing.T, tok string) (*nats.Conn, error) {
	t.Helper()
	return nats.Connect(stack.nats.ClientURL(), nats.Token(tok), nats.CustomInboxPrefix("_INBOX_orders"),
		nats.Timeout(5*time.Second), nats.NoReconnect())
}
