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

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
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
	kv      *platform.LazyBucket
	js      jetstream.JetStream
	service m2m.TokenSource
	log     *slog.Logger
	delay   time.Duration // how long the relay leaves a fresh event to Flush

	mu      sync.Mutex
	pending map[string]time.Time       // order id → when the relay first saw it owing events
	waiting map[string]map[string]bool // user id → order ids whose events wait for them (Resume)
	synced  bool
}

var _ app.Outbox = (*Outbox)(nil)

// NewOutbox returns the outbox. service is billing's own M2M identity, under
// which an invoice.refunded whose sealed token ran out is sealed again
// (tenant: billing-service holds refund:invoices, the on-behalf policy
// orders declares for BILLING_EVENTS); nothing else is published under it.
func NewOutbox(kv *platform.LazyBucket, js jetstream.JetStream, service m2m.TokenSource, log *slog.Logger) *Outbox {
	return &Outbox{kv: kv, js: js, service: service, log: log, delay: time.Second,
		pending: map[string]time.Time{}, waiting: map[string]map[string]bool{}}
}

// Pending is the number of records owing events (a metric).
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

// Waiting is the number of records whose events wait for their user's next
// request (a metric).
func (o *Outbox) Waiting() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, ids := range o.waiting {
		n += len(ids)
	}
	return n
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

// Flush implements app.Outbox: the fast path, right after the write.
func (o *Outbox) Flush(ctx context.Context, orderID string) error {
	return o.flush(ctx, orderID)
}

// flush publishes orderID's owed events, in order, each as it was sealed.
func (o *Outbox) flush(ctx context.Context, orderID string) error {
	store := &Store{kv: o.kv}
	_, err := cas.Retry(func() (struct{}, error) {
		r, rev, err := store.entry(ctx, orderID)
		if err != nil || len(r.Outbox) == 0 {
			return struct{}{}, err
		}
		sent := 0
		var pubErr error
		for _, ev := range r.Outbox {
			if pubErr = o.publish(ctx, ev, r.Trace); pubErr != nil {
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

// sealRanOut: an invoice.paid whose token expired before it could be
// published (an outage longer than the token's life). Nothing can announce
// the payment for the payer but the payer: the record keeps the event, and
// it is sealed again under their token on their next request (Resume).
type sealRanOut struct{ id, userID string }

func (e *sealRanOut) Error() string {
	return "outbox " + e.id + ": the event's token expired before it could be published; it waits for the payer's next request"
}

// publish sends one event with the token sealed with it at the change: the
// fast path and the relay alike, so billing's own identity never speaks for
// a payer. An invoice.refunded whose token ran out is sealed again as
// billing (refund:invoices is its own permission); an invoice.paid cannot
// be (sealRanOut). The event joins the trace the invoice was created in
// (its order's), linked to ctx's span (the pay request's, say).
func (o *Outbox) publish(ctx context.Context, ev outboxEvent, trace natsauth.StoredTrace) error {
	pctx := natsauth.ContinueTrace(context.WithoutCancel(ctx), trace)
	pctx, cancel := context.WithTimeout(pctx, 5*time.Second)
	defer cancel()
	if !ev.usable() {
		if ev.Type != events.InvoiceRefunded || o.service == nil {
			return &sealRanOut{id: ev.ID, userID: ev.UserID}
		}
		if err := ev.seal(natsauth.AsService(pctx, o.service)); err != nil {
			return err
		}
	}
	_, err := ev.Sealed.Publish(pctx, o.js)
	return err
}

// Resume implements app.Outbox: the events of userID's records that wait
// for them are sealed again under ctx's identity (the request's, theirs) and
// published.
func (o *Outbox) Resume(ctx context.Context, userID string) {
	o.mu.Lock()
	ids := make([]string, 0, len(o.waiting[userID]))
	for id := range o.waiting[userID] {
		ids = append(ids, id)
	}
	o.mu.Unlock()
	for _, id := range ids {
		if err := o.reseal(ctx, id, userID); err != nil {
			o.log.WarnContext(ctx, "outbox: waiting event not sealed again", slog.String("order_id", id), slog.String("error", err.Error()))
			continue
		}
		o.mu.Lock()
		delete(o.waiting[userID], id)
		if len(o.waiting[userID]) == 0 {
			delete(o.waiting, userID)
		}
		o.mu.Unlock()
		if err := o.flush(ctx, id); err != nil {
			o.log.WarnContext(ctx, "outbox: event sealed again, left to the relay", slog.String("order_id", id), slog.String("error", err.Error()))
		}
	}
}

// reseal seals again, under ctx's identity, the events of orderID's record
// that are userID's and whose token ran out.
func (o *Outbox) reseal(ctx context.Context, orderID, userID string) error {
	store := &Store{kv: o.kv}
	_, err := cas.Retry(func() (struct{}, error) {
		r, rev, err := store.entry(ctx, orderID)
		if err != nil {
			return struct{}{}, err
		}
		changed := false
		for i := range r.Outbox {
			if ev := &r.Outbox[i]; ev.UserID == userID && !ev.usable() {
				if err := ev.seal(ctx); err != nil {
					return struct{}{}, err
				}
				changed = true
			}
		}
		if !changed {
			return struct{}{}, nil
		}
		if err := store.put(ctx, r, rev); errors.Is(err, app.ErrStale) {
			return struct{}{}, cas.Lost(err)
		} else if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, nil
	})
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
		err := o.flush(ctx, k)
		var ran *sealRanOut
		switch {
		case errors.As(err, &ran):
			// Not retried: it waits for the payer (Resume).
			o.log.Warn("outbox relay: event waits for its user's next request", slog.String("order_id", k), slog.String("error", err.Error()))
			o.mu.Lock()
			delete(o.pending, k)
			if o.waiting[ran.userID] == nil {
				o.waiting[ran.userID] = map[string]bool{}
			}
			o.waiting[ran.userID][k] = true
			o.mu.Unlock()
		case err != nil:
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
