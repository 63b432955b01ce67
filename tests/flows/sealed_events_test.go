package flows

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestOwnedServiceSpeaksOnlyForLiveRequests: the attacker owns the orders
// process, then the billing process — its NATS identity, its M2M secret (the
// tenant file's dev secret) and every event it stored — against the running
// stack. An outbox relay used to publish under the service's own identity,
// which the consumers accepted for any user: an owned orders opened invoices
// for anyone, an owned billing marked anyone's order paid. Now an event's
// only credential is the token sealed for its exact bytes at the customer's
// request, so the attacker can neither have one made as the service, nor
// move one onto another payload. Each attempt is dead-lettered or refused,
// and the victim's state does not move.
func TestOwnedServiceSpeaksOnlyForLiveRequests(t *testing.T) {
	setup(t)
	alice := api.Token(t, apiclient.Alice)
	aliceID := api.Whoami(t, alice).UserID
	o := api.PlaceOrder(t, alice, apiclient.Mugs(1))
	api.WaitInvoice(t, alice, o.ID, "open", apiclient.FlowDeadline)
	victim := api.PlaceOrder(t, alice, apiclient.Mugs(3))
	api.WaitInvoice(t, alice, victim.ID, "open", apiclient.FlowDeadline)

	t.Run("orders announces an order as itself", func(t *testing.T) {
		ctx := attackerContext(t, "orders")
		_, err := natsauth.SealEvent(ctx, "orders.events.created", "order.created:forged-"+o.ID,
			natsauth.Envelope{Type: "order.created", UserID: aliceID, Data: []byte(`{"order_id":"forged","total_cents":1,"currency":"EUR","items":[]}`)})
		if authz.CodeOf(err) != authz.CodeInsufficientScope {
			t.Fatalf("the TTS sealed an order.created for orders-service itself: %v", err)
		}
	})

	t.Run("orders moves alice's sealed token onto another order", func(t *testing.T) {
		js := ordersJetStream(t)
		data, txn := storedCreated(t, js, victim, aliceID) // the newest order.created
		forgedID := "forged-" + victim.ID
		forged := bytes.ReplaceAll(data, []byte(victim.ID), []byte(forgedID))
		dlq := jetStreamAs(t, "billing")
		before := streamMsgs(t, dlq, "BILLING_DLQ")
		publishWith(t, js, "orders.events.created", "order.created:"+forgedID, forged, txn)
		wantDeadLetter(t, dlq, "BILLING_DLQ", before, "event_mismatch")
		if invs := api.InvoicesOf(t, alice, forgedID); len(invs) != 0 {
			t.Fatalf("billing opened an invoice for the forged order: %+v", invs)
		}
	})

	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/inv_"+o.ID+"/pay", alice, nil, http.StatusOK, nil)
	api.WaitOrder(t, alice, o.ID, "paid", apiclient.FlowDeadline)

	t.Run("billing marks an order paid as itself", func(t *testing.T) {
		ctx := attackerContext(t, "billing")
		_, err := natsauth.SealEvent(ctx, "billing.events.invoice.paid", "invoice.paid:inv_"+victim.ID,
			natsauth.Envelope{Type: "invoice.paid", UserID: aliceID, Data: []byte(`{"invoice_id":"inv_` + victim.ID + `","order_id":"` + victim.ID + `"}`)})
		if authz.CodeOf(err) != authz.CodeInsufficientScope {
			t.Fatalf("the TTS sealed an invoice.paid for billing-service itself: %v", err)
		}
	})

	t.Run("billing moves alice's payment onto another order", func(t *testing.T) {
		js := jetStreamAs(t, "billing")
		stream, err := js.Stream(stepCtx(t), "BILLING_EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		paid, err := stream.GetLastMsgForSubject(stepCtx(t), "billing.events.invoice.paid")
		if err != nil || paid.Header.Get(nats.MsgIdHdr) != "invoice.paid:inv_"+o.ID {
			t.Fatalf("alice's stored invoice.paid: %v %v", err, paid)
		}
		forged := bytes.ReplaceAll(paid.Data, []byte(o.ID), []byte(victim.ID))
		dlq := ordersJetStream(t)
		before := streamMsgs(t, dlq, "ORDERS_DLQ")
		publishWith(t, js, "billing.events.invoice.paid", "invoice.paid:inv_"+victim.ID, forged, paid.Header.Get(natsauth.HeaderTxnToken))
		wantDeadLetter(t, dlq, "ORDERS_DLQ", before, "event_mismatch")
		if got := api.GetOrder(t, alice, victim.ID); got.Status != "pending" {
			t.Fatalf("the victim order is %s, want pending", got.Status)
		}
	})
}

// attackerContext is what an owned service process can send under: its
// own M2M token (the tenant file's dev secret) as the identity, exchanged
// at the real Transaction Token Service over its own NATS connection.
func attackerContext(t *testing.T, name string) context.Context {
	t.Helper()
	nc, tok := connectAs(t, name)
	txn, err := natsauth.NewTxnClient(natsauth.TxnClientConfig{Conn: nc, Actor: staticToken(tok)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := natsauth.WithOutbound(context.Background(), &natsauth.Outbound{Exchanger: txn, Scopes: mesh.HopScopes})
	return natsauth.AsService(ctx, staticToken(tok))
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// publishWith publishes data on subj with exactly txn as its token.
func publishWith(t *testing.T, js jetstream.JetStream, subj, msgID string, data []byte, txn string) {
	t.Helper()
	msg := nats.NewMsg(subj)
	msg.Data = data
	msg.Header.Set(natsauth.HeaderTxnToken, txn)
	msg.Header.Set(nats.MsgIdHdr, msgID)
	if _, err := js.PublishMsg(stepCtx(t), msg); err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
}

// wantDeadLetter waits for the dead-letter stream to grow past before and
// checks the newest dead letter's reason.
func wantDeadLetter(t *testing.T, js jetstream.JetStream, name string, before uint64, reason string) {
	t.Helper()
	apiclient.Eventually(t, apiclient.FlowDeadline, name+" takes the forged event", func() (bool, string) {
		n := streamMsgs(t, js, name)
		return n > before, fmt.Sprintf("%d messages", n)
	})
	s, err := js.Stream(stepCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(stepCtx(t), s.CachedInfo().State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(natsauth.HeaderDLQReason); got != reason {
		t.Fatalf("dead letter's reason %q, want %q", got, reason)
	}
}
