package adapters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/billing/internal/app"
)

// Outbox publishes the events recorded in invoice records, and removes them
// from the record once JetStream acknowledged them.
//
// Why an outbox in the record: a KV bucket has no transaction across keys,
// so the only write that is atomic with the state change is the invoice
// record itself. The change and the event it owes are one compare-and-set;
// if the process dies before publishing, the event is still in the record.
// Flush publishes right after the write (fast path); Run watches the bucket
// and publishes whatever a crash or a NATS outage left behind (also at
// start-up, when the watch replays every record). A republish carries the
// same Nats-Msg-Id ("<type>:<invoice id>"), so the stream drops duplicates
// within its window, and orders applies paid/refunded idempotently beyond it.
type Outbox struct {
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	service natsauth.TokenSource
	log     *slog.Logger
	delay   time.Duration // how long the relay leaves a fresh event to Flush

	mu      sync.Mutex
	pending map[string]time.Time // order id → when the relay first saw it owing events
	synced  bool
}

var _ app.Outbox = (*Outbox)(nil)

// NewOutbox returns the outbox. service is billing's own M2M identity, used
// when the stored caller token would be expired by the time the consumer
// checks it.
func NewOutbox(kv jetstream.KeyValue, js jetstream.JetStream, service natsauth.TokenSource, log *slog.Logger) *Outbox {
	return &Outbox{kv: kv, js: js, service: service, log: log, delay: time.Second, pending: map[string]time.Time{}}
}

// Pending is the number of records owing events (a metric).
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

// Ready reports whether the relay has seen every record once.
func (o *Outbox) Ready(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.synced {
		return errors.New("outbox relay not synced")
	}
	return nil
}

// Flush implements app.Outbox.
func (o *Outbox) Flush(ctx context.Context, orderID string) error {
	for range 5 {
		store := &Store{kv: o.kv}
		r, rev, err := store.entry(ctx, orderID)
		if err != nil {
			return err
		}
		if len(r.Outbox) == 0 {
			return nil
		}
		sent := 0
		var pubErr error
		for _, ev := range r.Outbox {
			if pubErr = o.publish(ctx, ev); pubErr != nil {
				break
			}
			sent++
		}
		if sent > 0 {
			r.Outbox = r.Outbox[sent:]
			if err := store.put(ctx, r, rev); errors.Is(err, app.ErrStale) {
				continue // a newer change: re-read; republishing is de-duplicated
			} else if err != nil {
				return err
			}
		}
		return pubErr
	}
	return fmt.Errorf("outbox %s: contention", orderID)
}

// publish sends one event with the identity that made the change; if that
// token will have expired when the consumer verifies it (as of the stored
// time), billing's own identity stands in.
func (o *Outbox) publish(ctx context.Context, ev outboxEvent) error {
	pctx := context.WithoutCancel(ctx)
	if ev.Token != "" && tokenValidFor(ev.Token, time.Minute) {
		pctx = authz.WithClaims(pctx, nil, ev.Token)
	} else if o.service != nil {
		pctx = natsauth.AsService(pctx, o.service)
	}
	pctx, cancel := context.WithTimeout(pctx, 5*time.Second)
	defer cancel()
	data := map[string]any{"invoice_id": ev.InvoiceID, "order_id": ev.OrderID, "amount_cents": ev.AmountCents}
	_, err := natsauth.PublishEvent(pctx, o.js, eventSubjectBase+ev.Type, ev.Type, ev.InvoiceID, ev.UserID, data)
	return err
}

// tokenValidFor reads exp from our own stored token (it was verified when it
// arrived; the consumer verifies it again).
func tokenValidFor(tok string, d time.Duration) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Exp == 0 {
		return false
	}
	return time.Unix(c.Exp, 0).After(time.Now().Add(d))
}

// Run relays until ctx ends: it watches the bucket and flushes records that
// still owe events a moment after the fast path had its chance.
func (o *Outbox) Run(ctx context.Context) error {
	for {
		err := o.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		o.log.Warn("outbox relay watch ended; restarting", slog.String("error", fmt.Sprint(err)))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (o *Outbox) watch(ctx context.Context) error {
	w, err := o.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(o.delay / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			o.mu.Lock()
			if e == nil {
				o.synced = true
			} else {
				var r record
				owes := e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &r) == nil && len(r.Outbox) > 0
				if _, seen := o.pending[e.Key()]; owes && !seen {
					o.pending[e.Key()] = time.Now()
				} else if !owes {
					delete(o.pending, e.Key())
				}
			}
			o.mu.Unlock()
		case <-tick.C:
			o.relay(ctx)
		}
	}
}

func (o *Outbox) relay(ctx context.Context) {
	o.mu.Lock()
	var due []string
	for k, since := range o.pending {
		if time.Since(since) >= o.delay {
			due = append(due, k)
		}
	}
	o.mu.Unlock()
	for _, k := range due {
		if err := o.Flush(ctx, k); err != nil {
			o.log.Warn("outbox relay: publish failed; will retry", slog.String("order_id", k), slog.String("error", err.Error()))
			o.mu.Lock()
			if _, ok := o.pending[k]; ok {
				o.pending[k] = time.Now()
			}
			o.mu.Unlock()
		}
	}
}
