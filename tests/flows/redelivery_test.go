package flows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestRedeliveredOrderCreated publishes the same order.created event ten
// more times (as the orders NATS user, alice's token in its headers,
// distinct Nats-Msg-Ids so JetStream stores every copy): billing must keep
// one invoice for the order, whether the copies arrive after the original
// was handled, together with it, or after the order was cancelled.
func TestRedeliveredOrderCreated(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	who := api.Whoami(t, tok)
	js := ordersJetStream(t)

	tests := []struct {
		name string
		// prepare places the order and leaves it in the state the copies meet;
		// it reports whether billing must be started before the count.
		prepare     func(t *testing.T) (o apiclient.Order, restartBilling bool)
		wantInvoice string
	}{
		{
			name: "after the original was handled",
			prepare: func(t *testing.T) (apiclient.Order, bool) {
				o := api.PlaceOrder(t, tok, apiclient.Mugs(2))
				api.WaitInvoice(t, tok, o.ID, "open", apiclient.FlowDeadline)
				return o, false
			},
			wantInvoice: "open",
		},
		{
			name: "queued with the original while billing is down",
			prepare: func(t *testing.T) (apiclient.Order, bool) {
				stop(t, "billing")
				t.Cleanup(func() { ensureRunning(t) })
				return api.PlaceOrder(t, tok, apiclient.Mugs(4)), true
			},
			wantInvoice: "open",
		},
		{
			name: "after the order was cancelled",
			prepare: func(t *testing.T) (apiclient.Order, bool) {
				o := api.PlaceOrder(t, tok, apiclient.Mugs(1))
				api.WaitInvoice(t, tok, o.ID, "open", apiclient.FlowDeadline)
				api.CallJSON(t, http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil, http.StatusOK, nil)
				api.WaitInvoice(t, tok, o.ID, "void", apiclient.FlowDeadline)
				return o, false
			},
			wantInvoice: "void",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			o, restart := tc.prepare(t)
			data, txn := storedCreated(t, js, o, who.UserID)
			dlqBefore := streamMsgs(t, jetStreamAs(t, "billing"), "BILLING_DLQ")
			publishCopies(t, js, o.ID, data, txn, 10)
			if restart {
				start(t, "billing")
			}
			waitSettled(t, js)
			if dlq := streamMsgs(t, jetStreamAs(t, "billing"), "BILLING_DLQ"); dlq != dlqBefore {
				t.Errorf("BILLING_DLQ went from %d to %d messages: billing refused copies of a valid event instead of de-duplicating them", dlqBefore, dlq)
			}
			invs := api.InvoicesOf(t, tok, o.ID)
			if len(invs) != 1 || invs[0].Status != tc.wantInvoice || invs[0].AmountCents != o.TotalCents {
				t.Fatalf("after 10 copies of order.created: invoices %+v, want one, %s, %d cents", invs, tc.wantInvoice, o.TotalCents)
			}
			if tc.wantInvoice == "void" {
				if got := api.GetOrder(t, tok, o.ID); got.Status != "cancelled" {
					t.Fatalf("order %s after the copies: %q, want cancelled", o.ID, got.Status)
				}
			}
		})
	}
}

// ordersJetStream connects as the orders service's NATS user, the only one
// allowed to publish order events.
func ordersJetStream(t *testing.T) jetstream.JetStream { return jetStreamAs(t, "orders") }

// jetStreamAs connects as a service does, with its client-credentials
// token through the auth callout: its account's JetStream, where its own
// streams (e.g. billing's BILLING_DLQ) are.
func jetStreamAs(t *testing.T, name string) jetstream.JetStream {
	t.Helper()
	nc, _ := connectAs(t, name)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// connectAs connects as the service name does, with its client-credentials
// token (the tenant file's dev secret) through the auth callout, and returns
// the connection (closed with t) and that token.
func connectAs(t *testing.T, name string) (*nats.Conn, string) {
	t.Helper()
	tok := clientCredentials(t, name+"-service", name+"-service-dev-secret")
	nc, err := nats.Connect(stack.nats.ClientURL(), nats.Token(tok), nats.Name("flows-test"),
		nats.CustomInboxPrefix("_INBOX_"+name)) // a service may subscribe to its own inboxes only
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, tok
}

// storedCreated waits for the order.created event orders stored for o and
// returns its payload, after checking it is the conventions' envelope, and
// its transaction token. Replaying its exact bytes and token makes the copies
// the same event.
func storedCreated(t *testing.T, js jetstream.JetStream, o apiclient.Order, userID string) (data []byte, txnToken string) {
	t.Helper()
	ctx := stepCtx(t)
	stream, err := js.Stream(ctx, "ORDERS_EVENTS")
	if err != nil {
		t.Fatalf("ORDERS_EVENTS: %v", err)
	}
	// Tests run one at a time, so o's event is the last created one once it is there.
	var stored *jetstream.RawStreamMsg
	apiclient.Eventually(t, apiclient.FlowDeadline, "orders publishes order.created for "+o.ID, func() (bool, string) {
		m, err := stream.GetLastMsgForSubject(ctx, "orders.events.created")
		if err != nil {
			return false, err.Error()
		}
		stored = m
		return m.Header.Get(nats.MsgIdHdr) == "order.created:"+o.ID, "last Nats-Msg-Id " + m.Header.Get(nats.MsgIdHdr)
	})
	var env struct {
		ID         string `json:"id"`
		Type       string `json:"type"`
		Actor      string `json:"actor"`
		UserID     string `json:"user_id"`
		OccurredAt string `json:"occurred_at"`
		Data       struct {
			OrderID    string `json:"order_id"`
			TotalCents int64  `json:"total_cents"`
			Currency   string `json:"currency"`
		} `json:"data"`
	}
	if err := json.Unmarshal(stored.Data, &env); err != nil {
		t.Fatalf("stored event %s: %v", stored.Data, err)
	}
	if env.Type != "order.created" || env.Data.OrderID != o.ID || env.Actor != userID || env.UserID != userID ||
		env.ID == "" || env.OccurredAt == "" || env.Data.TotalCents != o.TotalCents || env.Data.Currency != o.Currency {
		t.Fatalf("stored event %s: want the conventions' order.created envelope for order %s by %s", stored.Data, o.ID, userID)
	}
	if stored.Header.Get("Authorization") != "" || stored.Header.Get("Txn-Token") == "" {
		t.Fatalf("stored event headers %v: want a Txn-Token and no Authorization", stored.Header)
	}
	return stored.Data, stored.Header.Get("Txn-Token")
}

// publishCopies publishes n copies of the event at once, each with its own
// Nats-Msg-Id so that JetStream stores them all and billing sees n deliveries.
func publishCopies(t *testing.T, js jetstream.JetStream, orderID string, data []byte, txnToken string, n int) {
	t.Helper()
	ctx := stepCtx(t)
	if err := concurrently(n, n, func(i int) error {
		msg := nats.NewMsg("orders.events.created")
		msg.Data = data
		msg.Header.Set("Txn-Token", txnToken)
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("order.created:%s:copy-%d-%s", orderID, i, randomHex(4)))
		ack, err := js.PublishMsg(ctx, msg)
		if err == nil && ack.Duplicate {
			err = fmt.Errorf("copy %d was de-duplicated by JetStream; the test needs it stored", i)
		}
		return err
	}); err != nil {
		t.Fatalf("publishing the copies: %v", err)
	}
}

// waitSettled waits until billing's durable consumer has handled and acked
// everything on ORDERS_EVENTS.
func waitSettled(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := stepCtx(t)
	apiclient.Eventually(t, 10*time.Second, "billing-orders consumer settles every message", func() (bool, string) {
		info, err := consumerInfo(ctx, js, "ORDERS_EVENTS", "billing-orders")
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0,
			fmt.Sprintf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
	})
}

func consumerInfo(ctx context.Context, js jetstream.JetStream, stream, name string) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// streamMsgs counts a stream's messages; a stream nobody has created yet has none.
func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(stepCtx(t), name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().State.Msgs
}
