package flows

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestFlows runs the five flows of contract §6 in order; each step must
// complete within 2 s.
func TestFlows(t *testing.T) {
	t.Run("order opens one invoice", func(t *testing.T) {
		setup(t)
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
		setup(t)
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
		setup(t)
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
		setup(t)
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
		setup(t)
		old, admin := token(t, alice), token(t, carol)
		who := whoami(t, old)
		pending := []order{placeOrder(t, old, mugs(1)), placeOrder(t, old, mugs(2))}
		for _, o := range pending {
			waitInvoice(t, old, o.ID, "open", flowDeadline)
		}
		paid := placeOrder(t, old, mugs(1))
		paidInv := waitInvoice(t, old, paid.ID, "open", flowDeadline)
		callJSON(t, http.MethodPost, "billing", "/v1/invoices/"+paidInv.ID+"/pay", old, nil, http.StatusOK, nil)
		waitOrder(t, old, paid.ID, "paid", flowDeadline)
		js := ordersJetStream(t)
		created, createdTxn := storedCreated(t, js, paid, who.UserID)
		blockPath := "/v1/users/" + url.PathEscape(who.UserID)
		t.Cleanup(func() {
			// Later tests need alice; unblocking an unblocked user is a no-op.
			if r, err := tryCall(http.MethodPost, "users", blockPath+"/unblock", admin, nil); err != nil || r.status != http.StatusOK {
				t.Errorf("cleanup: unblocking alice: %v %v", r, err)
			}
		})

		callJSON(t, http.MethodPost, "users", blockPath+"/block", admin, nil, http.StatusOK, nil)
		// Every consequence of the block is due 2 s after it was answered.
		due := time.Now().Add(flowDeadline)
		routes := []struct{ svc, path string }{
			{"users", "/v1/me"},
			{"orders", "/v1/orders"},
			{"billing", "/v1/invoices"},
		}
		for _, rt := range routes {
			eventually(t, time.Until(due), rt.svc+" rejects alice's token issued before the block", func() (bool, string) {
				err := wantInvalidToken(call(t, http.MethodGet, rt.svc, rt.path, old, nil))
				return err == nil, fmt.Sprint(err)
			})
		}
		if r := passwordGrant(t, alice); r.status != http.StatusUnauthorized || r.Description != "user is blocked" {
			t.Errorf("devtenant for blocked alice: %d %s %q, want 401 unauthorized \"user is blocked\"", r.status, r.Error, r.Description)
		}
		for _, o := range pending {
			waitOrder(t, admin, o.ID, "cancelled", time.Until(due))
			waitInvoice(t, admin, o.ID, "void", time.Until(due), who.UserID)
		}
		if got := getOrder(t, admin, paid.ID); got.Status != "paid" {
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
		if invs := invoicesOf(t, admin, forgedID, who.UserID); len(invs) != 0 {
			t.Errorf("order.created with alice's pre-block transaction token made invoices %+v, want none", invs)
		}
		if dlq := streamMsgs(t, jetStreamAs(t, "billing"), "BILLING_DLQ"); dlq != dlqBefore+1 {
			t.Errorf("BILLING_DLQ went from %d to %d messages after an event with a revoked token, want one more", dlqBefore, dlq)
		}

		callJSON(t, http.MethodPost, "users", blockPath+"/unblock", admin, nil, http.StatusOK, nil)
		fresh := token(t, alice)
		for _, rt := range routes {
			eventually(t, flowDeadline, rt.svc+" accepts alice's token issued after the unblock", func() (bool, string) {
				r := call(t, http.MethodGet, rt.svc, rt.path, fresh, nil)
				return r.status == http.StatusOK, r.String()
			})
			if err := wantInvalidToken(call(t, http.MethodGet, rt.svc, rt.path, old, nil)); err != nil {
				t.Errorf("%s, alice's token from before the block after the unblock: %v", rt.svc, err)
			}
		}
		o := placeOrder(t, fresh, mugs(1))
		waitInvoice(t, fresh, o.ID, "open", flowDeadline)
	})
}

func whoami(t *testing.T, tok string) me {
	t.Helper()
	var m me
	callJSON(t, http.MethodGet, "users", "/v1/me", tok, nil, http.StatusOK, &m)
	if m.UserID == "" {
		t.Fatal("GET /v1/me: empty user_id")
	}
	return m
}

// TestOwnershipAcrossServices: someone else's order or invoice is 404 in
// both services, while support (dave) may read them.
func TestOwnershipAcrossServices(t *testing.T) {
	setup(t)
	owner, other, support := token(t, alice), token(t, bob), token(t, dave)
	o := placeOrder(t, owner, mugs(1))
	inv := waitInvoice(t, owner, o.ID, "open", flowDeadline)

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
			r := call(t, tc.method, tc.svc, tc.path, tc.tok, nil)
			if r.status != tc.want {
				t.Fatalf("got %s, want %d", r, tc.want)
			}
			if tc.wantInvoices < 0 {
				return
			}
			var items []struct {
				ID      string `json:"id"`
				OrderID string `json:"order_id"`
			}
			if err := json.Unmarshal(r.body, &items); err != nil {
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
	if got := getOrder(t, owner, o.ID); got.Status != "pending" {
		t.Errorf("order after bob's attempts: %q, want pending", got.Status)
	}
	if got := getInvoice(t, owner, inv.ID); got.Status != "open" {
		t.Errorf("invoice after bob's attempts: %q, want open", got.Status)
	}
}

// TestConcurrentPayAndCancel fires pay and cancel for the same order at the
// same instant: billing arbitrates, so exactly one wins and the other gets
// 409, and both services end in agreeing states.
func TestConcurrentPayAndCancel(t *testing.T) {
	setup(t)
	tok := token(t, alice)
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
		o := placeOrder(t, tok, mugs(1))
		inv := waitInvoice(t, tok, o.ID, "open", flowDeadline)

		var (
			wg      sync.WaitGroup
			startGo = make(chan struct{})
			pay     response
			cancel  response
			payErr  error
			cancErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-startGo
			time.Sleep(delay)
			pay, payErr = tryCall(http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil)
		}()
		go func() {
			defer wg.Done()
			<-startGo
			cancel, cancErr = tryCall(http.MethodPost, "orders", "/v1/orders/"+o.ID+"/cancel", tok, nil)
		}()
		close(startGo)
		wg.Wait()
		if err := errors.Join(payErr, cancErr); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}

		var wantOrder, wantInvoice string
		switch {
		case pay.status == http.StatusOK && cancel.status == http.StatusConflict:
			wantOrder, wantInvoice = "paid", "paid"
		case cancel.status == http.StatusOK && pay.status == http.StatusConflict:
			wantOrder, wantInvoice = "cancelled", "void"
		default:
			t.Fatalf("round %d: pay %s, cancel %s; want exactly one 200 and one 409", round, pay, cancel)
		}
		wins[wantOrder]++
		t.Logf("round %d: pay %v after cancel: %s wins", round, delay, wantOrder)
		waitOrder(t, tok, o.ID, wantOrder, flowDeadline)
		waitInvoice(t, tok, o.ID, wantInvoice, flowDeadline)
	}
	t.Logf("winners over 10 rounds: %v", wins)
}

// TestOrdersWhileBillingIsDown: orders accepted while billing is stopped
// are invoiced once it is back, exactly one invoice each.
func TestOrdersWhileBillingIsDown(t *testing.T) {
	setup(t)
	const n = 100
	tok := token(t, alice)
	stop(t, "billing")
	t.Cleanup(func() { ensureRunning(t) })

	orders := make([]order, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := tryCall(http.MethodPost, "orders", "/v1/orders", tok, mugs(1+i%5))
			if err == nil && r.status != http.StatusCreated {
				err = fmt.Errorf("got %s, want 201", r)
			}
			if err == nil {
				err = json.Unmarshal(r.body, &orders[i])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
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
	eventually(t, 30*time.Second, fmt.Sprintf("%d invoices after billing restarted", n), func() (bool, string) {
		var invs []invoice
		callJSON(t, http.MethodGet, "billing", "/v1/invoices", tok, nil, http.StatusOK, &invs)
		per := map[string][]invoice{}
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
	tok := token(t, alice)
	key := "flows-" + randomHex(8)
	body := orderRequest{Items: []line{{SKU: "kettle", Quantity: 1}, {SKU: "tea-black", Quantity: 2}}}

	// A client retrying on a timeout may have its first attempt still in flight.
	const racers = 5
	answers := make([]order, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tryCall(http.MethodPost, "orders", "/v1/orders", tok, body, "Idempotency-Key", key)
			if err == nil && r.status != http.StatusCreated && r.status != http.StatusOK {
				err = fmt.Errorf("got %s, want the order", r)
			}
			if err == nil {
				err = json.Unmarshal(r.body, &answers[i])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
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

	r := call(t, http.MethodPost, "orders", "/v1/orders", tok, body, "Idempotency-Key", key)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("replay after restart: got %s, want the order again", r)
	}
	var again order
	if err := json.Unmarshal(r.body, &again); err != nil {
		t.Fatalf("decoding %s: %v", r, err)
	}
	if again.ID != first.ID || again.TotalCents != first.TotalCents {
		t.Fatalf("replay after restart gave order %+v, want %+v", again, first)
	}
	if r := call(t, http.MethodPost, "orders", "/v1/orders", tok, mugs(1), "Idempotency-Key", key); r.status != http.StatusConflict {
		t.Fatalf("same key, different body: got %s, want 409", r)
	}

	var mine []order
	callJSON(t, http.MethodGet, "orders", "/v1/orders", tok, nil, http.StatusOK, &mine)
	ids := make([]string, 0, len(mine))
	for _, o := range mine {
		ids = append(ids, o.ID)
	}
	if n := len(slices.DeleteFunc(ids, func(id string) bool { return id != first.ID })); n != 1 {
		t.Fatalf("alice's orders list order %s %d times, want once", first.ID, n)
	}
	waitInvoice(t, tok, first.ID, "open", flowDeadline)

	var bobs order
	callJSON(t, http.MethodPost, "orders", "/v1/orders", token(t, bob), body, http.StatusCreated, &bobs, "Idempotency-Key", key)
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
