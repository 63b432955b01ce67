package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/cas"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
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
	kv      *LazyBucket
	js      jetstream.JetStream
	service m2m.TokenSource
	log     *slog.Logger
	delay   time.Duration // how long the relay leaves a fresh event to Flush

	mu      sync.Mutex
	pending map[string]time.Time // order id → when the relay first saw it owing events
	synced  bool
}

var _ app.Outbox = (*Outbox)(nil)

// NewOutbox returns the outbox. service is billing's own M2M identity, under
// which the relay publishes what a crash or an outage left behind (tenant:
// billing-service holds refund:invoices, the on-behalf policy orders
// declares for BILLING_EVENTS).
func NewOutbox(kv *LazyBucket, js jetstream.JetStream, service m2m.TokenSource, log *slog.Logger) *Outbox {
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

// Flush implements app.Outbox: the fast path, right after the write, under
// the request's identity.
func (o *Outbox) Flush(ctx context.Context, orderID string) error {
	return o.flush(ctx, orderID, false)
}

// flush publishes orderID's owed events. relayed events always go out under
// billing's own identity: the caller's token is not kept (see outboxEvent).
func (o *Outbox) flush(ctx context.Context, orderID string, relayed bool) error {
	store := &Store{kv: o.kv}
	_, err := cas.Retry(func() (struct{}, error) {
		r, rev, err := store.entry(ctx, orderID)
		if err != nil || len(r.Outbox) == 0 {
			return struct{}{}, err
		}
		sent := 0
		var pubErr error
		for _, ev := range r.Outbox {
			if pubErr = o.publish(ctx, ev, relayed, r.Trace); pubErr != nil {
				break
			}
			sent++
		}
		if sent > 0 {
			r.Outbox = r.Outbox[sent:]
			if err := store.put(ctx, r, rev); errors.Is(err, app.ErrStale) {
				return struct{}{}, cas.Lost(err) // a newer change: re-read; republishing is de-duplicated
			} else if err != nil {
				return struct{}{}, err
			}
		}
		return struct{}{}, pubErr
	})
	if errors.Is(err, cas.ErrContended) {
		return fmt.Errorf("outbox %s: %w", orderID, err)
	}
	return err
}

// publish sends one event. On the fast path the request's token goes with
// an event its own caller caused; an event someone else's change left owing
// (their fast path failed) and every relayed event go under billing's M2M
// identity, the only credential billing holds at rest. The event joins the
// trace the invoice was created in (its order's), linked to ctx's span (the
// pay request's, say).
func (o *Outbox) publish(ctx context.Context, ev outboxEvent, relayed bool, trace natsauth.StoredTrace) error {
	pctx := natsauth.ContinueTrace(context.WithoutCancel(ctx), trace)
	c, hasClaims := authz.ClaimsFromContext(ctx)
	_, hasToken := authz.TokenFromContext(ctx)
	switch {
	case !relayed && hasClaims && hasToken && ev.Actor != "" && c.Subject == ev.Actor:
		// pctx keeps the request's identity as the middleware stored it,
		// with the DPoP proof it verified for a bound token (natsauth
		// exchanges such a token only then).
	case o.service != nil:
		pctx = natsauth.AsService(pctx, o.service)
	default:
		return fmt.Errorf("outbox: no identity to publish %s under", ev.ID)
	}
	pctx, cancel := context.WithTimeout(pctx, 5*time.Second)
	defer cancel()
	data := events.InvoiceData{InvoiceID: ev.InvoiceID, OrderID: ev.OrderID, AmountCents: ev.AmountCents}
	_, err := natsauth.PublishEvent(pctx, o.js, eventSubjectBase+ev.Type, ev.Type, ev.InvoiceID, ev.UserID, data)
	return err
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
	kv, err := o.kv.Get(ctx)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
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
		if err := o.flush(ctx, k, true); err != nil {
			o.log.Warn("outbox relay: publish failed; will retry", slog.String("order_id", k), slog.String("error", err.Error()))
			o.mu.Lock()
			if _, ok := o.pending[k]; ok {
				o.pending[k] = time.Now()
			}
			o.mu.Unlock()
		}
	}
}

// LiveUpdates implements app.LiveUpdates on the invoice owners' live feeds
// (mesh.LiveFeeds: authmesh.live.<uid>.invoices.<invoice id>). Unlike the
// events above they are not kept for a relay: a lost one is only a hint lost.
type LiveUpdates struct{ *platform.Live }

// InvoiceStatus implements app.LiveUpdates.
func (u LiveUpdates) InvoiceStatus(ctx context.Context, inv domain.Invoice) {
	u.Publish(ctx, inv.UserID, "invoices", platform.LiveStatus{Kind: "invoice", ID: inv.ID, OrderID: inv.OrderID, Status: string(inv.Status)})
}
