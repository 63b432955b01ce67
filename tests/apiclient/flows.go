package apiclient

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Flow is one of contract §6's flows, run as a subtest.
type Flow struct {
	Name string
	Run  func(t *testing.T)
}

// Flows are contract §6's order, pay, cancel and refund flows, each step
// within FlowDeadline, as alice (carol refunds). The block flow differs by
// suite; PendingOrders, BlockUser, WaitTokenRefused, WaitBlockCancelled
// and UnblockUser hold its common steps.
func (c *Client) Flows() []Flow {
	return []Flow{
		{"order opens one invoice", c.orderOpensOneInvoice},
		{"pay marks invoice and order paid", c.settles("pay", "paid", "paid")},
		{"cancel voids the open invoice", c.settles("cancel", "cancelled", "void")},
		{"admin refund marks invoice and order refunded", c.refundMarksRefunded},
	}
}

func (c *Client) orderOpensOneInvoice(t *testing.T) {
	tok := c.Token(t, Alice)
	who := c.Whoami(t, tok)
	o := c.PlaceOrder(t, tok, OrderRequest{Items: []Line{{SKU: "mug", Quantity: 2}, {SKU: "tea-green", Quantity: 1}}})
	if o.TotalCents != 2*1200+450 || o.Currency != "EUR" || o.UserID != who.UserID {
		t.Fatalf("order %+v: want total 2850 EUR for %s (catalog prices)", o, who.UserID)
	}
	inv := c.WaitInvoice(t, tok, o.ID, "open", FlowDeadline)
	if inv.AmountCents != o.TotalCents || inv.Currency != o.Currency || inv.UserID != who.UserID {
		t.Fatalf("invoice %+v does not match order %+v", inv, o)
	}
	// A second invoice would be a late duplicate; give it a moment to show.
	time.Sleep(300 * time.Millisecond)
	if invs := c.InvoicesOf(t, tok, o.ID); len(invs) != 1 {
		t.Fatalf("order %s has %d invoices, want 1: %+v", o.ID, len(invs), invs)
	}
	if got := c.GetOrder(t, tok, o.ID); got.Status != "pending" {
		t.Fatalf("order status %q with an open invoice, want pending", got.Status)
	}
}

// settles is the flow of one of the two ways an open order ends, how: "pay"
// (billing, its invoice) or "cancel" (orders, the order). Within
// FlowDeadline the order and its invoice reach orderStatus and
// invoiceStatus; after that both ways are refused with 409 and change
// neither.
func (c *Client) settles(how, orderStatus, invoiceStatus string) func(*testing.T) {
	return func(t *testing.T) {
		tok := c.Token(t, Alice)
		o, inv := c.openOrder(t, tok, Mugs(1))
		svc, path := settleRoute(how, o, inv)
		answer := map[string]string{"pay": invoiceStatus, "cancel": orderStatus}[how]
		c.postFor(t, how, svc, path, tok, answer)
		c.WaitOrder(t, tok, o.ID, orderStatus, FlowDeadline)
		c.WaitInvoice(t, tok, o.ID, invoiceStatus, FlowDeadline)
		for _, again := range []string{"pay", "cancel"} {
			svc, path := settleRoute(again, o, inv)
			c.postRefused(t, again+" after "+how, svc, path, tok, http.StatusConflict)
		}
		if got := c.GetOrder(t, tok, o.ID); got.Status != orderStatus {
			t.Fatalf("order after the refused pay and cancel: %q, want %s", got.Status, orderStatus)
		}
		if got := c.GetInvoice(t, tok, inv.ID); got.Status != invoiceStatus {
			t.Fatalf("invoice after the refused pay and cancel: %q, want %s", got.Status, invoiceStatus)
		}
	}
}

// settleRoute is the service and path that how, "pay" or "cancel", posts to
// for o and its invoice inv.
func settleRoute(how string, o Order, inv Invoice) (svc, path string) {
	if how == "pay" {
		return "billing", "/v1/invoices/" + inv.ID + "/pay"
	}
	return "orders", "/v1/orders/" + o.ID + "/cancel"
}

func (c *Client) refundMarksRefunded(t *testing.T) {
	tok, admin := c.Token(t, Alice), c.Token(t, Carol)
	o, inv := c.openOrder(t, tok, Mugs(3))
	c.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil, http.StatusOK, nil)
	c.WaitOrder(t, tok, o.ID, "paid", FlowDeadline)
	c.postRefused(t, "customer refunding", "billing", "/v1/invoices/"+inv.ID+"/refund", tok, http.StatusForbidden)
	c.postFor(t, "refund", "billing", "/v1/invoices/"+inv.ID+"/refund", admin, "refunded")
	c.WaitOrder(t, tok, o.ID, "refunded", FlowDeadline)
	c.postRefused(t, "refunding twice", "billing", "/v1/invoices/"+inv.ID+"/refund", admin, http.StatusConflict)
	if got := c.GetInvoice(t, tok, inv.ID); got.Status != "refunded" {
		t.Fatalf("invoice as its owner sees it: %q, want refunded", got.Status)
	}
}

// openOrder places req as tok and waits for the order's open invoice.
func (c *Client) openOrder(t testing.TB, tok string, req OrderRequest) (Order, Invoice) {
	t.Helper()
	o := c.PlaceOrder(t, tok, req)
	return o, c.WaitInvoice(t, tok, o.ID, "open", FlowDeadline)
}

// postFor posts nothing to svc as tok, wants 200 and an answer whose status
// is want; what names the step in the failure.
func (c *Client) postFor(t testing.TB, what, svc, path, tok, want string) {
	t.Helper()
	var got map[string]any
	c.CallJSON(t, http.MethodPost, svc, path, tok, nil, http.StatusOK, &got)
	if got["status"] != want {
		t.Fatalf("%s answered %v, want status %s", what, got, want)
	}
}

// postRefused posts nothing to svc and fails t unless the answer is want;
// what names the step in the failure.
func (c *Client) postRefused(t testing.TB, what, svc, path, tok string, want int) {
	t.Helper()
	if r := c.Call(t, http.MethodPost, svc, path, tok, nil); r.Status != want {
		t.Fatalf("%s: got %s, want %d", what, r, want)
	}
}

// The block flow's common steps. Its users are named in messages by the
// part of their email before the @.

// PendingOrders places two orders and waits for their open invoices, for a
// block to cancel.
func (c *Client) PendingOrders(t testing.TB, tok string) []Order {
	t.Helper()
	pending := []Order{c.PlaceOrder(t, tok, Mugs(1)), c.PlaceOrder(t, tok, Mugs(2))}
	for _, o := range pending {
		c.WaitInvoice(t, tok, o.ID, "open", FlowDeadline)
	}
	return pending
}

// BlockUser blocks the user as admin and, when t ends, unblocks them again
// for later tests (unblocking an unblocked user is a no-op).
func (c *Client) BlockUser(t testing.TB, admin, email, userID string) {
	t.Helper()
	path := "/v1/users/" + url.PathEscape(userID)
	t.Cleanup(func() {
		if r, err := c.TryCall(http.MethodPost, "users", path+"/unblock", admin, nil); err != nil || r.Status != http.StatusOK {
			t.Errorf("cleanup: unblocking %s: %v %v", name(email), r, err)
		}
	})
	c.CallJSON(t, http.MethodPost, "users", path+"/block", admin, nil, http.StatusOK, nil)
}

// WaitTokenRefused waits, within d, until every service refuses tok, issued
// to the user before the block, with contract §5's answer; then devtenant
// must refuse the user a new token.
func (c *Client) WaitTokenRefused(t testing.TB, tok, email string, d time.Duration) {
	t.Helper()
	due := time.Now().Add(d)
	for _, rt := range AuthedRoutes {
		Eventually(t, time.Until(due), rt.Svc+" rejects "+name(email)+"'s token issued before the block", func() (bool, string) {
			err := WantInvalidToken(c.Call(t, http.MethodGet, rt.Svc, rt.Path, tok, nil))
			return err == nil, fmt.Sprint(err)
		})
	}
	if r := c.PasswordGrant(t, email); r.Status != http.StatusUnauthorized || r.Description != "user is blocked" {
		t.Errorf("devtenant for blocked %s: %d %s %q, want 401 unauthorized \"user is blocked\"", name(email), r.Status, r.Error, r.Description)
	}
}

// WaitBlockCancelled waits, within d, until the blocked user's pending
// orders are cancelled and their invoices void, as admin sees them.
func (c *Client) WaitBlockCancelled(t testing.TB, admin, userID string, pending []Order, d time.Duration) {
	t.Helper()
	due := time.Now().Add(d)
	for _, o := range pending {
		c.WaitOrder(t, admin, o.ID, "cancelled", time.Until(due))
		c.WaitInvoice(t, admin, o.ID, "void", time.Until(due), userID)
	}
}

// UnblockUser unblocks the user as admin; then every service must accept a
// fresh token while still refusing old, issued before the block, and an
// order with the fresh one must be invoiced.
func (c *Client) UnblockUser(t testing.TB, admin, email, userID, old string) {
	t.Helper()
	c.CallJSON(t, http.MethodPost, "users", "/v1/users/"+url.PathEscape(userID)+"/unblock", admin, nil, http.StatusOK, nil)
	fresh := c.Token(t, email)
	for _, rt := range AuthedRoutes {
		Eventually(t, FlowDeadline, rt.Svc+" accepts "+name(email)+"'s token issued after the unblock", func() (bool, string) {
			r := c.Call(t, http.MethodGet, rt.Svc, rt.Path, fresh, nil)
			return r.Status == http.StatusOK, r.String()
		})
		if err := WantInvalidToken(c.Call(t, http.MethodGet, rt.Svc, rt.Path, old, nil)); err != nil {
			t.Errorf("%s, %s's token from before the block after the unblock: %v", rt.Svc, name(email), err)
		}
	}
	o := c.PlaceOrder(t, fresh, Mugs(1))
	c.WaitInvoice(t, fresh, o.ID, "open", FlowDeadline)
}

// name is how messages call a dev user: alice for alice@authmesh.dev.
func name(email string) string {
	n, _, _ := strings.Cut(email, "@")
	return n
}
