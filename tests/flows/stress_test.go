package flows

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestCancelBeforeTheInvoiceExists cancels orders the instant they are
// placed, often before billing has seen order.created: billing records the
// invoice already void, and the late created event must not open it.
func TestCancelBeforeTheInvoiceExists(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	js := ordersJetStream(t)
	const rounds = 25
	var placed []apiclient.Order
	refused := 0
	for range rounds {
		o := api.PlaceOrder(t, tok, apiclient.Mugs(1))
		if r := api.Call(t, http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil); r.Status != http.StatusOK {
			// Keep going: how often it happens says how wide the window is.
			t.Errorf("cancelling own order %s right after placing it: got %s, want 200", o.ID, r)
			refused++
			continue
		}
		placed = append(placed, o)
	}
	if refused > 0 {
		t.Errorf("%d of %d immediate cancels refused", refused, rounds)
	}
	waitSettled(t, js)
	for _, o := range placed {
		if got := api.GetOrder(t, tok, o.ID); got.Status != "cancelled" {
			t.Errorf("order %s: %q, want cancelled", o.ID, got.Status)
		}
		invs := api.InvoicesOf(t, tok, o.ID)
		if len(invs) != 1 || invs[0].Status != "void" {
			t.Errorf("order %s cancelled at once: invoices %+v, want one, void", o.ID, invs)
		}
	}
}

// TestOrdersStoppedWithOrdersInFlight stops orders (SIGTERM) while clients
// are placing orders: every order that was accepted (201) is still there
// after the restart and gets exactly one invoice; no accepted order is lost
// between storing it and publishing its event.
func TestOrdersStoppedWithOrdersInFlight(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	const clients, perClient = 4, 15

	var (
		mu       sync.Mutex
		accepted []apiclient.Order
		refused  int
		okCount  atomic.Int32
		wg       sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				r, err := api.TryCall(http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1))
				if err != nil || r.Status != http.StatusCreated {
					// Refused or cut off by the shutdown: not accepted, nothing promised.
					mu.Lock()
					refused++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				var o apiclient.Order
				if err := json.Unmarshal(r.Body, &o); err != nil {
					t.Errorf("decoding %s: %v", r, err)
					return
				}
				okCount.Add(1)
				mu.Lock()
				accepted = append(accepted, o)
				mu.Unlock()
			}
		}()
	}
	// Stop in the middle of the stream of orders.
	for okCount.Load() < clients*perClient/4 {
		time.Sleep(5 * time.Millisecond)
	}
	stop(t, "orders")
	start(t, "orders")
	wg.Wait()
	t.Logf("%d orders accepted, %d refused or cut off around the restart", len(accepted), refused)
	if refused == 0 {
		t.Log("no request met the restart; the test proved less than it could")
	}

	mine := api.OrdersOf(t, tok)
	stored := map[string]bool{}
	for _, o := range mine {
		stored[o.ID] = true
	}
	var lost []string
	for _, o := range accepted {
		if !stored[o.ID] {
			lost = append(lost, o.ID)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d accepted orders are gone after the restart: %v", len(lost), lost)
	}
	want := map[string]bool{}
	for _, o := range accepted {
		want[o.ID] = true
	}
	apiclient.Eventually(t, 10*time.Second, "one invoice per accepted order", func() (bool, string) {
		var invs []apiclient.Invoice
		api.CallJSON(t, http.MethodGet, "billing", "/v1/invoices", tok, nil, http.StatusOK, &invs)
		per := map[string]int{}
		for _, inv := range invs {
			if want[inv.OrderID] {
				per[inv.OrderID]++
			}
		}
		var errs []error
		for id, n := range per {
			if n > 1 {
				errs = append(errs, fmt.Errorf("order %s has %d invoices", id, n))
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return len(per) == len(want), fmt.Sprintf("%d of %d accepted orders invoiced", len(per), len(want))
	})
}

// TestOrdersSpareTheManagementAPI: placing an order asks users for the
// caller's profile; that must not cost Management API calls each time. The
// tenant's Management API is rate limited for the whole tenant (devtenant:
// 1000 requests a minute, a real Auth0 tenant far less), and once the limit
// is reached every order placement and every GET /v1/me answers 503 until
// the window resets.
func TestOrdersSpareTheManagementAPI(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	api.PlaceOrder(t, tok, apiclient.Mugs(1)) // warm whatever the services cache
	const n = 20
	before := stack.mgmtCalls.Load()
	for range n {
		api.PlaceOrder(t, tok, apiclient.Mugs(1))
	}
	if calls := stack.mgmtCalls.Load() - before; calls >= n {
		t.Errorf("%d orders by one user made %d Management API requests; at that rate the tenant's limit caps the whole system at about %d orders a minute (devtenant's 1000/min)",
			n, calls, 1000*n/int(calls))
	}
}

// TestBlockCancelsManyPendingOrders: contract §6 gives the whole block flow
// 2 s, including the cancellation of the user's pending orders, which a user
// may have many of.
func TestBlockCancelsManyPendingOrders(t *testing.T) {
	setup(t)
	const n = 80
	tok, admin := api.Token(t, apiclient.Bob), api.Token(t, apiclient.Carol)
	who := api.Whoami(t, tok)
	var pending []apiclient.Order
	for range n {
		pending = append(pending, api.PlaceOrder(t, tok, apiclient.Mugs(1)))
	}
	api.BlockUser(t, admin, apiclient.Bob, who.UserID)
	began := time.Now()
	apiclient.Eventually(t, 10*time.Second, fmt.Sprintf("bob's %d pending orders cancelled", n), func() (bool, string) {
		orders := api.OrdersOf(t, admin, who.UserID)
		status := map[string]string{}
		for _, o := range orders {
			status[o.ID] = o.Status
		}
		left := 0
		for _, o := range pending {
			if status[o.ID] != "cancelled" {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d of %d not cancelled yet", left, n)
	})
	took := time.Since(began)
	t.Logf("%d pending orders cancelled %v after the block", n, took.Round(time.Millisecond))
	if took > apiclient.FlowDeadline {
		t.Errorf("cancelling bob's %d pending orders after the block took %v, want within %v (contract §6)", n, took.Round(time.Millisecond), apiclient.FlowDeadline)
	}
}
