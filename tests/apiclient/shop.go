package apiclient

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// Contract §4 shapes, as far as the tests read them.
type (
	Order struct {
		ID         string `json:"id"`
		UserID     string `json:"user_id"`
		Status     string `json:"status"`
		TotalCents int64  `json:"total_cents"`
		Currency   string `json:"currency"`
		Items      []Line `json:"items"`
	}

	Invoice struct {
		ID          string `json:"id"`
		OrderID     string `json:"order_id"`
		UserID      string `json:"user_id"`
		Status      string `json:"status"`
		AmountCents int64  `json:"amount_cents"`
		Currency    string `json:"currency"`
	}

	Me struct {
		UserID string `json:"user_id"`
		Email  string `json:"email"`
	}

	Line struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}

	OrderRequest struct {
		Items []Line `json:"items"`
	}
)

// Mugs is an order of n mugs (1200 cents each in the seed catalog).
func Mugs(n int) OrderRequest { return OrderRequest{Items: []Line{{SKU: "mug", Quantity: n}}} }

// Whoami is the caller as users sees it.
func (c *Client) Whoami(t testing.TB, tok string) Me {
	t.Helper()
	var m Me
	c.CallJSON(t, http.MethodGet, "users", "/v1/me", tok, nil, http.StatusOK, &m)
	if m.UserID == "" {
		t.Fatal("GET /v1/me: empty user_id")
	}
	return m
}

// PlaceOrder places an order and checks it is answered pending.
func (c *Client) PlaceOrder(t testing.TB, tok string, req OrderRequest) Order {
	t.Helper()
	var o Order
	c.CallJSON(t, http.MethodPost, "orders", "/v1/orders", tok, req, http.StatusCreated, &o)
	if o.ID == "" || o.Status != "pending" {
		t.Fatalf("new order %+v: want an id and status pending", o)
	}
	return o
}

func (c *Client) GetOrder(t testing.TB, tok, id string) Order {
	t.Helper()
	var o Order
	c.CallJSON(t, http.MethodGet, "orders", "/v1/orders/"+url.PathEscape(id), tok, nil, http.StatusOK, &o)
	return o
}

func (c *Client) GetInvoice(t testing.TB, tok, id string) Invoice {
	t.Helper()
	var inv Invoice
	c.CallJSON(t, http.MethodGet, "billing", "/v1/invoices/"+url.PathEscape(id), tok, nil, http.StatusOK, &inv)
	return inv
}

// OrdersOf lists the caller's orders or, when forUser is given, that
// user's (which needs read:all-orders).
func (c *Client) OrdersOf(t testing.TB, tok string, forUser ...string) []Order {
	t.Helper()
	path := "/v1/orders"
	if len(forUser) > 0 {
		path += "?" + url.Values{"user_id": {forUser[0]}}.Encode()
	}
	var orders []Order
	c.CallJSON(t, http.MethodGet, "orders", path, tok, nil, http.StatusOK, &orders)
	return orders
}

// TryInvoicesOf lists the invoices of one order: the caller's own, or, when
// forUser is given, that user's (which needs read:all-invoices).
func (c *Client) TryInvoicesOf(tok, orderID string, forUser ...string) ([]Invoice, error) {
	q := url.Values{"order_id": {orderID}}
	if len(forUser) > 0 {
		q.Set("user_id", forUser[0])
	}
	r, err := c.TryCall(http.MethodGet, "billing", "/v1/invoices?"+q.Encode(), tok, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/invoices?order_id=%s: %s", orderID, r)
	}
	var invs []Invoice
	if err := json.Unmarshal(r.Body, &invs); err != nil {
		return nil, fmt.Errorf("decoding %s: %v", r, err)
	}
	return invs, nil
}

// InvoicesOf is TryInvoicesOf that fails the test on an error.
func (c *Client) InvoicesOf(t testing.TB, tok, orderID string, forUser ...string) []Invoice {
	t.Helper()
	invs, err := c.TryInvoicesOf(tok, orderID, forUser...)
	if err != nil {
		t.Fatal(err)
	}
	return invs
}

// Eventually polls check until it reports done, failing the test with the
// last state check described if that does not happen within d.
func Eventually(t testing.TB, d time.Duration, what string, check func() (done bool, state string)) {
	t.Helper()
	start := time.Now()
	for {
		done, state := check()
		if done {
			return
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v; last: %s", what, d, state)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// WaitInvoice waits for the order's one invoice in status want and returns
// it; it fails as soon as a second invoice for the order shows up.
func (c *Client) WaitInvoice(t testing.TB, tok, orderID, want string, d time.Duration, forUser ...string) Invoice {
	t.Helper()
	var got Invoice
	Eventually(t, d, fmt.Sprintf("order %s's invoice %s", orderID, want), func() (bool, string) {
		invs := c.InvoicesOf(t, tok, orderID, forUser...)
		if len(invs) > 1 {
			t.Fatalf("order %s has %d invoices, want 1: %+v", orderID, len(invs), invs)
		}
		if len(invs) == 0 {
			return false, "no invoice"
		}
		got = invs[0]
		return got.Status == want, fmt.Sprintf("%+v", got)
	})
	if got.OrderID != orderID {
		t.Fatalf("invoice %+v answers ?order_id=%s", got, orderID)
	}
	return got
}

// WaitOrder waits until the order has status want.
func (c *Client) WaitOrder(t testing.TB, tok, id, want string, d time.Duration) Order {
	t.Helper()
	var got Order
	Eventually(t, d, fmt.Sprintf("order %s %s", id, want), func() (bool, string) {
		got = c.GetOrder(t, tok, id)
		return got.Status == want, got.Status
	})
	return got
}
