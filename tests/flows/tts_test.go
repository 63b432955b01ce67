package flows

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestTransactionTokenServiceDown: with the Transaction Token Service gone,
// a request that changes state answers 503 with Retry-After — never 401 or
// 500 — and leaves nothing behind, for a caller whose transaction tokens are
// cached as for a new one: every event is sealed for its own payload at the
// request that causes it, which takes the service. Reads still answer. The
// TTS also answers the NATS auth callout: the services' connections, made
// before, stay up, but a new connection with a valid client token is refused
// until the TTS is back.
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

	if got := api.GetOrder(t, warm, first.ID); got.ID != first.ID {
		t.Fatalf("a read while the service is down: %+v", got)
	}
	for who, tok := range map[string]string{"a caller with cached transaction tokens": warm, "a new caller": cold} {
		before := api.OrdersOf(t, tok)
		r := api.Call(t, http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1))
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s while the service is down: %s (Retry-After %q), want 503 with Retry-After", who, r, r.Header.Get("Retry-After"))
		}
		if strings.Contains(string(r.Body), tok) {
			t.Fatal("the answer quotes the token")
		}
		if after := api.OrdersOf(t, tok); len(after) != len(before) {
			t.Fatalf("%s: the refused request left an order behind: %d orders before, %d after", who, len(before), len(after))
		}
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
