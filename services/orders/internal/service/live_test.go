package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// TestOwnersHearOfTheirOrdersLive: alice, connected as the SPA connects
// (WebSocket, her access token, the TTS answering the callout), hears every
// status her orders take, once each, as the order's id and status and
// nothing else; bob, connected the same way, hears nothing of hers, nor may
// he listen on her feed.
func TestOwnersHearOfTheirOrdersLive(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	aliceFeed := s.ms.Feed(t, "alice@authmesh.dev", "orders", "invoices")
	bobFeed := s.ms.Feed(t, "bob@authmesh.dev", "orders", "invoices")
	alice, carol := s.token("alice@authmesh.dev"), s.token("carol@authmesh.dev")
	hears := func(id, status string) {
		t.Helper()
		aliceFeed.Expect(t, 5*time.Second, mesh.LiveSubject(aliceFeed.Sub, "orders", id),
			map[string]any{"kind": "order", "id": id, "status": status})
	}
	invoiceData := func(o orderOut) map[string]any {
		return map[string]any{"invoice_id": "inv_" + o.ID, "order_id": o.ID, "amount_cents": o.TotalCents}
	}

	paid := s.placeOrder(alice, mugs)
	hears(paid.ID, "pending")
	// Billing republishes (its relay, a redelivery) under a new message id,
	// so JetStream does not drop the second: one transition, one update.
	data, _ := json.Marshal(invoiceData(paid))
	ctx := s.peers[mesh.Billing].Outbound(context.Background(), alice)
	ev, err := natsauth.SealEvent(ctx, "billing.events.invoice.paid", "invoice.paid:inv_"+paid.ID,
		natsauth.Envelope{Type: "invoice.paid", UserID: paid.UserID, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ev.MsgID = fmt.Sprintf("invoice.paid:inv_%s:%d", paid.ID, i)
		if _, err := ev.Publish(context.Background(), s.peers[mesh.Billing].JS); err != nil {
			t.Fatal(err)
		}
	}
	hears(paid.ID, "paid")
	s.publishAs(carol, "billing.events.invoice.refunded", "invoice.refunded", "inv_"+paid.ID, paid.UserID, invoiceData(paid))
	hears(paid.ID, "refunded")

	cancelled := s.placeOrder(alice, mugs)
	hears(cancelled.ID, "pending")
	if r := s.do(http.MethodPost, "/v1/orders/"+cancelled.ID+"/cancel", alice, ""); r.Status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	hears(cancelled.ID, "cancelled")

	// Blocking alice cancels her pending orders as the service; she hears
	// that too (until the revocation closes her connection).
	blocked := s.placeOrder(alice, mugs)
	hears(blocked.ID, "pending")
	s.publishAs(carol, "users.events.blocked", "user.blocked", blocked.UserID, blocked.UserID,
		map[string]string{"user_id": blocked.UserID, "at": time.Now().UTC().Format(time.RFC3339)})
	hears(blocked.ID, "cancelled")
	aliceFeed.Quiet(t, 300*time.Millisecond)

	// Bob's feed stayed silent (Quiet below sees what came meanwhile), and
	// alice's is not his to subscribe to.
	if _, err := bobFeed.Conn.Subscribe(mesh.LiveSubject(aliceFeed.Sub, "orders", ">"), func(m *nats.Msg) {
		t.Errorf("bob received alice's update on %s", m.Subject)
	}); err != nil {
		t.Fatal(err)
	}
	if err := bobFeed.Err(2 * time.Second); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		t.Fatalf("bob subscribing to alice's feed: %v, want a permissions violation", err)
	}
	s.placeOrder(alice, mugs)
	bobFeed.Quiet(t, 300*time.Millisecond)
}
