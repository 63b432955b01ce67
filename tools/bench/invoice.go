package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/tools/devstack"
)

const (
	pollInterval = 5 * time.Millisecond
	// invoicePerClient bounds the latency stage (50×20 = 1000 orders);
	// invoicePerClientLimited keeps it to 50×8 = 400 orders, at most 800
	// Management API calls, inside one rate-limit window (see runLoad).
	invoicePerClient        = 20
	drainTimeout            = 60 * time.Second
	invoicePerClientLimited = 8
)

type invoiceLatency struct {
	Clients, Orders, Missing int
	PerClient                int
	Failures                 map[string]int // why an order or its invoice is missing
	Poll                     time.Duration
	ExtraPolls               int             // GETs beyond the first, when billing did not list a stored invoice yet
	Create, Invoice, E2E     []time.Duration // sorted
}

// orderToInvoice runs clients loops of "create an order, then wait until
// billing lists its invoice" for d. Billing has no public push interface;
// polling its API every few milliseconds would load billing with many times
// more requests than the orders being measured. Instead a KV watch on billing's
// bucket (as billing's dev NATS user) says when the invoice is stored, and
// only then one GET /v1/invoices?order_id= checks that billing lists it
// (retried every pollInterval if not yet): the interval ends when that GET
// answers with the invoice.
func orderToInvoice(ctx context.Context, orders, billing string, h http.Header, body []byte, clients, perClient int, d time.Duration) *invoiceLatency {
	res := &invoiceLatency{Clients: clients, PerClient: perClient, Poll: pollInterval, Failures: map[string]int{}}
	w, err := watchInvoices(ctx)
	if err != nil {
		res.Failures["watching billing's invoices: "+err.Error()]++
		return res
	}
	defer w.stop()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * clients, MaxIdleConns: 4 * clients}}
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for n := 0; n < perClient && time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				t0 := time.Now()
				id, err := createOrder(ctx, c, orders, h, body)
				if err != nil {
					mu.Lock()
					res.Missing++
					res.Failures[err.Error()]++
					mu.Unlock()
					if ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond) // no hot loop on a failing endpoint
					}
					continue
				}
				t1 := time.Now()
				until := t1.Add(5 * time.Second)
				stored := w.wait(ctx, id, until)
				polls, ok := 0, false
				if stored {
					polls, ok = waitInvoice(ctx, c, billing, h, id, until)
				}
				t2 := time.Now()
				mu.Lock()
				res.Orders++
				res.ExtraPolls += max(polls-1, 0)
				switch {
				case ok:
					res.Create = append(res.Create, t1.Sub(t0))
					res.Invoice = append(res.Invoice, t2.Sub(t1))
					res.E2E = append(res.E2E, t2.Sub(t0))
				case stored:
					res.Missing++
					res.Failures["invoice stored but not listed within 5 s"]++
				default:
					res.Missing++
					res.Failures["no invoice stored within 5 s"]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slicesSort(res.Create)
	slicesSort(res.Invoice)
	slicesSort(res.E2E)
	return res
}

// invoiceWatch records when each order's invoice first appears in billing's
// bucket (key = order id). It connects as billing does, with billing's
// client-credentials token, which the auth callout turns into a user of the
// BILLING account where the bucket lives: billing's allow list lets it
// create the ordered consumer a KV watch uses on KV_billing_invoices.
type invoiceWatch struct {
	nc   *nats.Conn
	kw   jetstream.KeyWatcher
	mu   sync.Mutex
	seen map[string]chan struct{} // closed once the order's invoice is stored
}

func watchInvoices(ctx context.Context) (*invoiceWatch, error) {
	tok, err := devstack.ClientToken(ctx, "billing")
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(devstack.NATSURL, nats.Token(tok), nats.Name("bench"),
		nats.CustomInboxPrefix("_INBOX_billing")) // billing may subscribe to its own inboxes only (deploy/nats/accounts.conf)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kv, err := js.KeyValue(ctx, "billing_invoices")
	if err != nil {
		nc.Close()
		return nil, err
	}
	kw, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		nc.Close()
		return nil, err
	}
	w := &invoiceWatch{nc: nc, kw: kw, seen: map[string]chan struct{}{}}
	go func() {
		for e := range kw.Updates() {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				w.stored(e.Key())
			}
		}
	}()
	return w, nil
}

// channel returns the channel closed once the order's invoice is stored.
func (w *invoiceWatch) channel(id string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.channelLocked(id)
}

// stored marks the order's invoice as stored; later updates of it are no-ops.
func (w *invoiceWatch) stored(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.channelLocked(id)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (w *invoiceWatch) channelLocked(id string) chan struct{} {
	ch, ok := w.seen[id]
	if !ok {
		ch = make(chan struct{})
		w.seen[id] = ch
	}
	return ch
}

// wait reports whether the order's invoice was stored before until.
func (w *invoiceWatch) wait(ctx context.Context, id string, until time.Time) bool {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-w.channel(id):
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (w *invoiceWatch) stop() {
	_ = w.kw.Stop()
	w.nc.Close()
}

// waitInvoice asks billing for the order's invoice until it is listed or
// until passes, every pollInterval; it returns the number of requests made.
func waitInvoice(ctx context.Context, c *http.Client, billing string, h http.Header, id string, until time.Time) (int, bool) {
	n := 0
	for time.Now().Before(until) && ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, billing+"/v1/invoices?order_id="+id, nil)
		if err != nil {
			return n, false
		}
		req.Header.Set("Authorization", h.Get("Authorization"))
		n++
		resp, err := c.Do(req)
		if err == nil {
			var list []json.RawMessage
			derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && derr == nil && len(list) > 0 {
				return n, true
			}
		}
		time.Sleep(pollInterval)
	}
	return n, false
}
