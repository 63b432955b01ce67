package service

import (
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// TestOwnersHearOfTheirInvoicesLive: alice, connected as the SPA connects,
// hears her invoices open and change status (id, order, status: nothing
// else); bob, connected the same way, hears nothing of hers.
func TestOwnersHearOfTheirInvoicesLive(t *testing.T) {
	s := newStack(t)
	feeds := map[string]*ttstest.Feed{}
	for _, who := range []string{"alice", "bob"} {
		feeds[who] = s.ms.Feed(t, who+"@authmesh.dev", "orders", "invoices")
	}
	alice := feeds["alice"]
	invoice := func(orderID, status string) {
		t.Helper()
		id := domain.InvoiceID(orderID)
		alice.Expect(t, 5*time.Second, mesh.LiveSubject(alice.Sub, "invoices", id),
			map[string]any{"kind": "invoice", "id": id, "order_id": orderID, "status": status})
	}
	step := func(method, path, who string) {
		t.Helper()
		if code, body, _, _ := s.do(method, path, who); code != 200 {
			t.Fatalf("%s %s as %s: %d %v", method, path, who, code, body)
		}
	}

	s.created("alice", "ord-live-paid", 900)
	invoice("ord-live-paid", "open")
	step("POST", "/v1/invoices/"+domain.InvoiceID("ord-live-paid")+"/pay", "alice")
	invoice("ord-live-paid", "paid")
	step("POST", "/v1/invoices/"+domain.InvoiceID("ord-live-paid")+"/refund", "carol")
	invoice("ord-live-paid", "refunded")

	s.created("alice", "ord-live-void", 900)
	invoice("ord-live-void", "open")
	if err := s.void("alice", "ord-live-void"); err != nil {
		t.Fatal(err)
	}
	invoice("ord-live-void", "void")
	if err := s.void("alice", "ord-live-void"); err != nil { // a retried cancel changes nothing
		t.Fatal(err)
	}

	// Voided by the orders service before its created event: nobody's yet,
	// so nobody hears of it until the event names alice.
	if err := s.void("orders-service", "ord-live-early"); err != nil {
		t.Fatal(err)
	}
	s.created("alice", "ord-live-early", 900)
	invoice("ord-live-early", "void")

	alice.Quiet(t, 300*time.Millisecond)
	feeds["bob"].Quiet(t, 300*time.Millisecond)
}
