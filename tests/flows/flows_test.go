package flows

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestFlows runs the five flows of contract §6 in order; each step must
// complete within 2 s.
func TestFlows(t *testing.T) {
	for _, f := range api.Flows() {
		t.Run(f.Name, func(t *testing.T) {
			setup(t)
			f.Run(t)
		})
	}

	t.Run("block revokes tokens and cancels pending orders; unblock", func(t *testing.T) {
		setup(t)
		old, admin := api.Token(t, apiclient.Alice), api.Token(t, apiclient.Carol)
		who := api.Whoami(t, old)
		pending := api.PendingOrders(t, old)
		paid := api.PlaceOrder(t, old, apiclient.Mugs(1))
		paidInv := api.WaitInvoice(t, old, paid.ID, "open", apiclient.FlowDeadline)
		api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+paidInv.ID+"/pay", old, nil, http.StatusOK, nil)
		api.WaitOrder(t, old, paid.ID, "paid", apiclient.FlowDeadline)
		js := ordersJetStream(t)
		created, createdTxn := storedCreated(t, js, paid, who.UserID)
		api.BlockUser(t, admin, apiclient.Alice, who.UserID)
		// Every consequence of the block is due 2 s after it was answered.
		due := time.Now().Add(apiclient.FlowDeadline)
		api.WaitTokenRefused(t, old, apiclient.Alice, time.Until(due))
		api.WaitBlockCancelled(t, admin, who.UserID, pending, time.Until(due))
		if got := api.GetOrder(t, admin, paid.ID); got.Status != "paid" {
			t.Errorf("alice's paid order after the block: %q, want paid (only pending orders are cancelled)", got.Status)
		}

		// What alice's requests put on NATS before the block must not work
		// after it either: an order.created for a new order carrying the
		// transaction token captured from her earlier event is refused
		// (dead-lettered), not invoiced.
		forgedID := newUUID()
		var env map[string]any
		if err := json.Unmarshal(created, &env); err != nil {
			t.Fatal(err)
		}
		env["id"] = newUUID()
		env["occurred_at"] = time.Now().UTC().Format(time.RFC3339Nano)
		env["data"].(map[string]any)["order_id"] = forgedID
		forged, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		dlqBefore := streamMsgs(t, jetStreamAs(t, "billing"), "BILLING_DLQ")
		publishCopies(t, js, forgedID, forged, createdTxn, 1)
		waitSettled(t, js)
		if invs := api.InvoicesOf(t, admin, forgedID, who.UserID); len(invs) != 0 {
			t.Errorf("order.created with alice's pre-block transaction token made invoices %+v, want none", invs)
		}
		if dlq := streamMsgs(t, jetStreamAs(t, "billing"), "BILLING_DLQ"); dlq != dlqBefore+1 {
			t.Errorf("BILLING_DLQ went from %d to %d messages after an event with a revoked token, want one more", dlqBefore, dlq)
		}

		api.UnblockUser(t, admin, apiclient.Alice, who.UserID, old)
	})
}

// TestOwnershipAcrossServices: someone else's order or invoice is 404 in
// both services, while support (dave) may read them.
func TestOwnershipAcrossServices(t *testing.T) {
	setup(t)
	owner, other, support := api.Token(t, apiclient.Alice), api.Token(t, apiclient.Bob), api.Token(t, apiclient.Dave)
	o := api.PlaceOrder(t, owner, apiclient.Mugs(1))
	inv := api.WaitInvoice(t, owner, o.ID, "open", apiclient.FlowDeadline)

	tests := []struct {
		name         string
		method, svc  string
		path         string
		tok          string
		want         int
		wantInvoices int // for list answers: how many of them name the order; -1 for non-lists
	}{
		{"bob gets alice's order", http.MethodGet, "orders", "/v1/orders/" + o.ID, other, http.StatusNotFound, -1},
		{"bob gets alice's invoice", http.MethodGet, "billing", "/v1/invoices/" + inv.ID, other, http.StatusNotFound, -1},
		{"bob cancels alice's order", http.MethodPost, "orders", "/v1/orders/" + o.ID + "/cancel", other, http.StatusNotFound, -1},
		{"bob pays alice's invoice", http.MethodPost, "billing", "/v1/invoices/" + inv.ID + "/pay", other, http.StatusNotFound, -1},
		{"bob lists invoices by alice's order", http.MethodGet, "billing", "/v1/invoices?order_id=" + o.ID, other, http.StatusOK, 0},
		{"bob lists his orders", http.MethodGet, "orders", "/v1/orders", other, http.StatusOK, 0},
		{"dave (support) gets alice's order", http.MethodGet, "orders", "/v1/orders/" + o.ID, support, http.StatusOK, -1},
		{"dave (support) gets alice's invoice", http.MethodGet, "billing", "/v1/invoices/" + inv.ID, support, http.StatusOK, -1},
		{"alice lists invoices by her order", http.MethodGet, "billing", "/v1/invoices?order_id=" + o.ID, owner, http.StatusOK, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := api.Call(t, tc.method, tc.svc, tc.path, tc.tok, nil)
			if r.Status != tc.want {
				t.Fatalf("got %s, want %d", r, tc.want)
			}
			if tc.wantInvoices < 0 {
				return
			}
			var items []struct {
				ID      string `json:"id"`
				OrderID string `json:"order_id"`
			}
			if err := json.Unmarshal(r.Body, &items); err != nil {
				t.Fatalf("decoding %s: %v", r, err)
			}
			n := 0
			for _, it := range items {
				if it.ID == o.ID || it.OrderID == o.ID {
					n++
				}
			}
			if n != tc.wantInvoices {
				t.Fatalf("%d entries name alice's order %s, want %d: %s", n, o.ID, tc.wantInvoices, r)
			}
		})
	}
	// Nothing bob tried changed anything.
	if got := api.GetOrder(t, owner, o.ID); got.Status != "pending" {
		t.Errorf("order after bob's attempts: %q, want pending", got.Status)
	}
	if got := api.GetInvoice(t, owner, inv.ID); got.Status != "open" {
		t.Errorf("invoice after bob's attempts: %q, want open", got.Status)
	}
}

// TestConcurrentPayAndCancel fires pay and cancel for the same order at the
// same instant: billing arbitrates, so exactly one wins and the other gets
// 409, and both services end in agreeing states.
func TestConcurrentPayAndCancel(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	wins := map[string]int{}
	// Cancel takes a NATS round trip to billing before it can void, pay is
	// local to billing: started at the very same instant pay always wins.
	// Holding pay back by a growing head start for cancel moves the two
	// through billing's critical section together in some rounds, and lets
	// cancel win in others.
	var headStart []time.Duration
	for i := range 10 {
		headStart = append(headStart, time.Duration(i)*time.Duration(i)*250*time.Microsecond)
	}
	for round, delay := range headStart {
		o := api.PlaceOrder(t, tok, apiclient.Mugs(1))
		inv := api.WaitInvoice(t, tok, o.ID, "open", apiclient.FlowDeadline)

		var (
			wg      sync.WaitGroup
			startGo = make(chan struct{})
			pay     apiclient.Response
			cancel  apiclient.Response
			payErr  error
			cancErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-startGo
			time.Sleep(delay)
			pay, payErr = api.TryCall(http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil)
		}()
		go func() {
			defer wg.Done()
			<-startGo
			cancel, cancErr = api.TryCall(http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil)
		}()
		close(startGo)
		wg.Wait()
		if err := errors.Join(payErr, cancErr); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}

		var wantOrder, wantInvoice string
		switch {
		case pay.Status == http.StatusOK && cancel.Status == http.StatusConflict:
			wantOrder, wantInvoice = "paid", "paid"
		case cancel.Status == http.StatusOK && pay.Status == http.StatusConflict:
			wantOrder, wantInvoice = "cancelled", "void"
		default:
			t.Fatalf("round %d: pay %s, cancel %s; want exactly one 200 and one 409", round, pay, cancel)
		}
		wins[wantOrder]++
		t.Logf("round %d: pay %v after cancel: %s wins", round, delay, wantOrder)
		api.WaitOrder(t, tok, o.ID, wantOrder, apiclient.FlowDeadline)
		api.WaitInvoice(t, tok, o.ID, wantInvoice, apiclient.FlowDeadline)
	}
	t.Logf("winners over 10 rounds: %v", wins)
}

// TestOrdersWhileBillingIsDown: orders accepted while billing is stopped
// are invoiced once it is back, exactly one invoice each.
func TestOrdersWhileBillingIsDown(t *testing.T) {
	setup(t)
	const n = 100
	tok := api.Token(t, apiclient.Alice)
	stop(t, "billing")
	t.Cleanup(func() { ensureRunning(t) })

	orders := make([]apiclient.Order, n)
	if err := concurrently(n, 4, func(i int) error {
		return tryPlace(tok, apiclient.Mugs(1+i%5), &orders[i], nil, http.StatusCreated)
	}); err != nil {
		t.Fatalf("placing %d orders with billing down: %v", n, err)
	}
	want := map[string]int64{} // order id → total
	for _, o := range orders {
		want[o.ID] = o.TotalCents
	}
	if len(want) != n {
		t.Fatalf("%d distinct order ids for %d orders", len(want), n)
	}

	start(t, "billing")
	began := time.Now()
	apiclient.Eventually(t, 30*time.Second, fmt.Sprintf("%d invoices after billing restarted", n), func() (bool, string) {
		var invs []apiclient.Invoice
		api.CallJSON(t, http.MethodGet, "billing", "/v1/invoices", tok, nil, http.StatusOK, &invs)
		per := map[string][]apiclient.Invoice{}
		for _, inv := range invs {
			if _, ok := want[inv.OrderID]; ok {
				per[inv.OrderID] = append(per[inv.OrderID], inv)
			}
		}
		for id, is := range per {
			if len(is) != 1 {
				t.Fatalf("order %s has %d invoices: %+v", id, len(is), is)
			}
			if is[0].Status != "open" || is[0].AmountCents != want[id] {
				t.Fatalf("invoice %+v: want open, %d cents", is[0], want[id])
			}
		}
		return len(per) == n, fmt.Sprintf("%d of %d orders invoiced", len(per), n)
	})
	t.Logf("%d invoices %v after billing restarted", n, time.Since(began).Round(time.Millisecond))
}

// TestIdempotencyKeyAcrossRestart: the same Idempotency-Key and body, sent
// concurrently and again after orders restarted, give back the same order,
// never a second one; the key is the user's own.
func TestIdempotencyKeyAcrossRestart(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	key := "flows-" + randomHex(8)
	body := apiclient.OrderRequest{Items: []apiclient.Line{{SKU: "kettle", Quantity: 1}, {SKU: "tea-black", Quantity: 2}}}

	// A client retrying on a timeout may have its first attempt still in flight.
	const racers = 5
	answers := make([]apiclient.Order, racers)
	if err := concurrently(racers, racers, func(i int) error {
		return tryPlace(tok, body, &answers[i], []string{"Idempotency-Key", key}, http.StatusCreated, http.StatusOK)
	}); err != nil {
		t.Fatalf("%d concurrent requests with one key: %v", racers, err)
	}
	first := answers[0]
	for _, a := range answers {
		if a.ID == "" || a.ID != first.ID {
			t.Fatalf("%d concurrent requests with one key made orders %v, want one", racers, answers)
		}
	}

	stop(t, "orders")
	start(t, "orders")

	r := api.Call(t, http.MethodPost, "orders", "/v1/orders", tok, body, "Idempotency-Key", key)
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("replay after restart: got %s, want the order again", r)
	}
	var again apiclient.Order
	if err := json.Unmarshal(r.Body, &again); err != nil {
		t.Fatalf("decoding %s: %v", r, err)
	}
	if again.ID != first.ID || again.TotalCents != first.TotalCents {
		t.Fatalf("replay after restart gave order %+v, want %+v", again, first)
	}
	if r := api.Call(t, http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1), "Idempotency-Key", key); r.Status != http.StatusConflict {
		t.Fatalf("same key, different body: got %s, want 409", r)
	}

	mine := api.OrdersOf(t, tok)
	ids := make([]string, 0, len(mine))
	for _, o := range mine {
		ids = append(ids, o.ID)
	}
	if n := len(slices.DeleteFunc(ids, func(id string) bool { return id != first.ID })); n != 1 {
		t.Fatalf("alice's orders list order %s %d times, want once", first.ID, n)
	}
	api.WaitInvoice(t, tok, first.ID, "open", apiclient.FlowDeadline)

	var bobs apiclient.Order
	api.CallJSON(t, http.MethodPost, "orders", "/v1/orders", api.Token(t, apiclient.Bob), body, http.StatusCreated, &bobs, "Idempotency-Key", key)
	if bobs.ID == first.ID {
		t.Fatalf("bob's order with alice's Idempotency-Key is alice's order %s", first.ID)
	}
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// concurrently runs do(0) to do(n-1), at most par at a time, and returns
// their errors joined.
func concurrently(n, par int, do func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = do(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tryPlace places body as tok, with the header pairs in hdr, and decodes the
// order into out; the answer's status must be one of want.
func tryPlace(tok string, body apiclient.OrderRequest, out *apiclient.Order, hdr []string, want ...int) error {
	r, err := api.TryCall(http.MethodPost, "orders", "/v1/orders", tok, body, hdr...)
	if err != nil {
		return err
	}
	if !slices.Contains(want, r.Status) {
		return fmt.Errorf("got %s, want %v", r, want)
	}
	return json.Unmarshal(r.Body, out)
}
