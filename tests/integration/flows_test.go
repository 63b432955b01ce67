package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// testFlows runs the five flows of contract §6 in order, each step within 2 s,
// across the containers (orders asks users over NATS, billing consumes the
// JetStream events, users blocks in devtenant through its Management API).
func testFlows(t *testing.T) {
	t.Run("order opens one invoice", func(t *testing.T) {
		tok := token(t, alice)
		who := whoami(t, tok)
		o := placeOrder(t, tok, orderRequest{Items: []line{{SKU: "mug", Quantity: 2}, {SKU: "tea-green", Quantity: 1}}})
		if o.TotalCents != 2*1200+450 || o.Currency != "EUR" || o.UserID != who.UserID {
			t.Fatalf("order %+v: want total 2850 EUR for %s (catalog prices)", o, who.UserID)
		}
		inv := waitInvoice(t, tok, o.ID, "open", flowDeadline)
		if inv.AmountCents != o.TotalCents || inv.Currency != o.Currency || inv.UserID != who.UserID {
			t.Fatalf("invoice %+v does not match order %+v", inv, o)
		}
		// A second invoice would be a late duplicate; give it a moment to show.
		time.Sleep(300 * time.Millisecond)
		if invs := invoicesOf(t, tok, o.ID); len(invs) != 1 {
			t.Fatalf("order %s has %d invoices, want 1: %+v", o.ID, len(invs), invs)
		}
		if got := getOrder(t, tok, o.ID); got.Status != "pending" {
			t.Fatalf("order status %q with an open invoice, want pending", got.Status)
		}
	})

	t.Run("pay marks invoice and order paid", func(t *testing.T) {
		tok := token(t, alice)
		o := placeOrder(t, tok, mugs(1))
		inv := waitInvoice(t, tok, o.ID, "open", flowDeadline)
		var paid invoice
		callJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil, http.StatusOK, &paid)
		if paid.Status != "paid" {
			t.Fatalf("pay answered %+v, want status paid", paid)
		}
		waitOrder(t, tok, o.ID, "paid", flowDeadline)
		if r := call(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil); r.status != http.StatusConflict {
			t.Fatalf("paying twice: got %s, want 409", r)
		}
		if r := call(t, http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil); r.status != http.StatusConflict {
			t.Fatalf("cancelling a paid order: got %s, want 409", r)
		}
		if got := getInvoice(t, tok, inv.ID); got.Status != "paid" {
			t.Fatalf("invoice after a refused cancel: %q, want paid", got.Status)
		}
	})

	t.Run("cancel voids the open invoice", func(t *testing.T) {
		tok := token(t, alice)
		o := placeOrder(t, tok, mugs(1))
		inv := waitInvoice(t, tok, o.ID, "open", flowDeadline)
		var c order
		callJSON(t, http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil, http.StatusOK, &c)
		if c.Status != "cancelled" {
			t.Fatalf("cancel answered %+v, want status cancelled", c)
		}
		waitInvoice(t, tok, o.ID, "void", flowDeadline)
		if r := call(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil); r.status != http.StatusConflict {
			t.Fatalf("paying a void invoice: got %s, want 409", r)
		}
		if r := call(t, http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil); r.status != http.StatusConflict {
			t.Fatalf("cancelling twice: got %s, want 409", r)
		}
		if got := getOrder(t, tok, o.ID); got.Status != "cancelled" {
			t.Fatalf("order after the refused pay: %q, want cancelled", got.Status)
		}
	})

	t.Run("admin refund marks invoice and order refunded", func(t *testing.T) {
		tok, admin := token(t, alice), token(t, carol)
		o := placeOrder(t, tok, mugs(3))
		inv := waitInvoice(t, tok, o.ID, "open", flowDeadline)
		callJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil, http.StatusOK, nil)
		waitOrder(t, tok, o.ID, "paid", flowDeadline)
		if r := call(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/refund", tok, nil); r.status != http.StatusForbidden {
			t.Fatalf("customer refunding: got %s, want 403", r)
		}
		var ref invoice
		callJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/refund", admin, nil, http.StatusOK, &ref)
		if ref.Status != "refunded" {
			t.Fatalf("refund answered %+v, want status refunded", ref)
		}
		waitOrder(t, tok, o.ID, "refunded", flowDeadline)
		if r := call(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/refund", admin, nil); r.status != http.StatusConflict {
			t.Fatalf("refunding twice: got %s, want 409", r)
		}
		if got := getInvoice(t, tok, inv.ID); got.Status != "refunded" {
			t.Fatalf("invoice as its owner sees it: %q, want refunded", got.Status)
		}
	})

	t.Run("block revokes tokens and cancels pending orders; unblock", func(t *testing.T) {
		old, admin := token(t, bob), token(t, carol)
		who := whoami(t, old)
		pending := []order{placeOrder(t, old, mugs(1)), placeOrder(t, old, mugs(2))}
		for _, o := range pending {
			waitInvoice(t, old, o.ID, "open", flowDeadline)
		}
		blockPath := "/v1/users/" + url.PathEscape(who.UserID)
		t.Cleanup(func() {
			// Later scenarios need bob; unblocking an unblocked user is a no-op.
			if r, err := tryCall(http.MethodPost, "users", blockPath+"/unblock", admin, nil); err != nil || r.status != http.StatusOK {
				t.Errorf("cleanup: unblocking bob: %v %v", r, err)
			}
		})

		callJSON(t, http.MethodPost, "users", blockPath+"/block", admin, nil, http.StatusOK, nil)
		for _, rt := range authedRoutes {
			eventually(t, flowDeadline, rt.svc+" rejects bob's token issued before the block", func() (bool, string) {
				err := wantInvalidToken(call(t, http.MethodGet, rt.svc, rt.path, old, nil))
				return err == nil, fmt.Sprint(err)
			})
		}
		if r := passwordGrant(t, bob); r.status != http.StatusUnauthorized || r.Description != "user is blocked" {
			t.Errorf("devtenant for blocked bob: %d %s %q, want 401 unauthorized \"user is blocked\"", r.status, r.Error, r.Description)
		}
		for _, o := range pending {
			waitOrder(t, admin, o.ID, "cancelled", flowDeadline)
			waitInvoice(t, admin, o.ID, "void", flowDeadline, who.UserID)
		}

		callJSON(t, http.MethodPost, "users", blockPath+"/unblock", admin, nil, http.StatusOK, nil)
		fresh := token(t, bob)
		for _, rt := range authedRoutes {
			eventually(t, flowDeadline, rt.svc+" accepts bob's token issued after the unblock", func() (bool, string) {
				r := call(t, http.MethodGet, rt.svc, rt.path, fresh, nil)
				return r.status == http.StatusOK, r.String()
			})
			if err := wantInvalidToken(call(t, http.MethodGet, rt.svc, rt.path, old, nil)); err != nil {
				t.Errorf("%s, bob's token from before the block after the unblock: %v", rt.svc, err)
			}
		}
		o := placeOrder(t, fresh, mugs(1))
		waitInvoice(t, fresh, o.ID, "open", flowDeadline)
	})
}
