// Package adapters connects billing's use cases to JetStream: the invoice
// bucket with its outbox, the event publisher and relay, and the consumer of
// the orders' events.
package adapters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// Names owned by billing (docs/conventions.md).
const (
	InvoiceBucket    = "billing_invoices"
	EventsStream     = "BILLING_EVENTS"
	DLQStream        = "BILLING_DLQ"
	eventSubjectBase = "billing.events."
)

// EnsureBuckets creates or updates the service's bucket (idempotent), and
// writes the per-user index keys a bucket from before them lacks.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) (*platform.Bucket, error) {
	// Reads go to the stream leader: an invoice reads back right after it is
	// written, also on a replicated stream (platform.KeyValue).
	kv, err := platform.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: InvoiceBucket, Description: "billing: one invoice per order, with its outbox",
		History: 5, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, err
	}
	if err := backfillUserIndex(ctx, kv); err != nil {
		return nil, fmt.Errorf("bucket %s: user index: %w", InvoiceBucket, err)
	}
	return kv, nil
}

// Besides the invoices (key = order id), the bucket holds a per-user index
// so that listing a user's invoices reads only theirs:
//
//	<order id>                          the invoice record
//	u.<base64url(user id)>.<order id>   "1": the order's invoice belongs to the user
//	meta.user-index                     "1": the invoices stored before the index have their keys
//
// An invoice with a user has its index key once a Create for it succeeded
// (see Create); a void recorded for the orders service has no user and no
// key until its order.created fills it in.
const (
	userIndexPrefix = "u."
	indexMarker     = "meta.user-index"
)

func userIndexKey(userID, orderID string) string {
	return userIndexPrefix + base64.RawURLEncoding.EncodeToString([]byte(userID)) + "." + orderID
}

// backfillUserIndex writes the index keys of invoices stored before the
// index existed, once per bucket (the marker says it is done).
func backfillUserIndex(ctx context.Context, kv jetstream.KeyValue) error {
	if _, err := kv.Get(ctx, indexMarker); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	var keys []string
	for e := range w.Updates() {
		if e == nil {
			break
		}
		var r record
		if json.Unmarshal(e.Value(), &r) == nil && r.OrderID != "" && r.UserID != "" {
			keys = append(keys, userIndexKey(r.UserID, r.OrderID))
		}
	}
	for _, k := range keys {
		if _, err := kv.Put(ctx, k, []byte("1")); err != nil {
			return err
		}
	}
	_, err = kv.Put(ctx, indexMarker, []byte("1"))
	return err
}

// record is an invoice as stored, plus the events its last changes owe.
type record struct {
	ID          string        `json:"id"`
	OrderID     string        `json:"order_id"`
	UserID      string        `json:"user_id"`
	OrgID       string        `json:"org_id,omitempty"`
	Status      string        `json:"status"`
	AmountCents int64         `json:"amount_cents"`
	Currency    string        `json:"currency"`
	CreatedAt   time.Time     `json:"created_at"`
	PaidAt      *time.Time    `json:"paid_at,omitempty"`
	Billed      bool          `json:"billed"`
	Outbox      []outboxEvent `json:"outbox,omitempty"`
	// Trace is the W3C trace context the invoice was created in (the
	// order.created delivery's, natsauth.TraceCarrier): its events are
	// published as children of it, so an order is one trace from POST
	// /v1/orders to invoice.paid consumed (natsauth.ContinueTrace).
	Trace natsauth.StoredTrace `json:"trace,omitzero"`
}

// outboxEvent is an event owed by a state change, sealed for the caller who
// made it. It never keeps their access token: the bucket is replicated and
// keeps history, and a bearer token at rest there would be a credential
// anyone with read access to the bucket (or its disk) could replay until it
// expires. The sealed token carries this event's exact bytes and nothing
// else; the fast path and the relay both publish it (see Outbox.publish).
type outboxEvent struct {
	ID          string    `json:"id"` // "<type>:<invoice id>", the Nats-Msg-Id
	Type        string    `json:"type"`
	InvoiceID   string    `json:"invoice_id"`
	OrderID     string    `json:"order_id"`
	UserID      string    `json:"user_id"`
	AmountCents int64     `json:"amount_cents"`
	RecordedAt  time.Time `json:"recorded_at"`
	// Sealed is the event's message with the token bound to it, exchanged
	// for the caller who made the change (natsauth.SealEvent): whoever
	// flushes the record publishes it as it is.
	Sealed *natsauth.SealedEvent `json:"sealed,omitempty"`
}

// usable reports whether ev's sealed token can still carry it to the stream.
func (ev *outboxEvent) usable() bool {
	return ev.Sealed != nil && ev.Sealed.Usable(time.Now())
}

// seal binds ev to a token exchanged for ctx's identity (the caller's, or
// billing's own under natsauth.AsService).
func (ev *outboxEvent) seal(ctx context.Context) error {
	data, err := json.Marshal(events.InvoiceData{InvoiceID: ev.InvoiceID, OrderID: ev.OrderID, AmountCents: ev.AmountCents})
	if err != nil {
		return err
	}
	ev.Sealed, err = natsauth.SealEvent(ctx, eventSubjectBase+ev.Type, ev.ID,
		natsauth.Envelope{Type: ev.Type, UserID: ev.UserID, OccurredAt: ev.RecordedAt, Data: data})
	if err != nil {
		return fmt.Errorf("seal %s: %w", ev.ID, err)
	}
	return nil
}

func toRecord(inv domain.Invoice) record {
	r := record{
		ID: inv.ID, OrderID: inv.OrderID, UserID: inv.UserID, OrgID: inv.OrgID, Status: string(inv.Status),
		AmountCents: inv.AmountCents, Currency: inv.Currency, CreatedAt: inv.CreatedAt, Billed: inv.Billed,
	}
	if !inv.PaidAt.IsZero() {
		t := inv.PaidAt
		r.PaidAt = &t
	}
	return r
}

func (r record) invoice() domain.Invoice {
	inv := domain.Invoice{
		ID: r.ID, OrderID: r.OrderID, UserID: r.UserID, OrgID: r.OrgID, Status: domain.Status(r.Status),
		AmountCents: r.AmountCents, Currency: r.Currency, CreatedAt: r.CreatedAt, Billed: r.Billed,
	}
	if r.PaidAt != nil {
		inv.PaidAt = *r.PaidAt
	}
	return inv
}

// Store implements app.Store on the billing_invoices bucket: key = order id,
// so a second create for the same order fails in the server (kv.Create), and
// updates are compare-and-set on the revision read.
type Store struct {
	kv *platform.LazyBucket
}

var _ app.Store = (*Store)(nil)

// NewStore returns a store on kv.
func NewStore(kv *platform.LazyBucket) *Store { return &Store{kv: kv} }

func (s *Store) entry(ctx context.Context, orderID string) (record, uint64, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return record{}, 0, err
	}
	if !domain.ValidOrderID(orderID) {
		return record{}, 0, fmt.Errorf("%w: order %q", domain.ErrNotFound, orderID)
	}
	e, err := kv.Get(ctx, orderID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, fmt.Errorf("%w: order %s", domain.ErrNotFound, orderID)
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("kv get %s: %w", orderID, err)
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return record{}, 0, fmt.Errorf("kv decode %s: %w", orderID, err)
	}
	return r, e.Revision(), nil
}

// Get implements app.Store.
func (s *Store) Get(ctx context.Context, orderID string) (app.Versioned, error) {
	r, rev, err := s.entry(ctx, orderID)
	if err != nil {
		return app.Versioned{}, err
	}
	return app.Versioned{Invoice: r.invoice(), Revision: rev}, nil
}

// Create implements app.Store.
func (s *Store) Create(ctx context.Context, inv domain.Invoice) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	r := toRecord(inv)
	r.Trace = natsauth.TraceCarrier(ctx)
	natsauth.RecordID(ctx, events.AttrInvoiceID, inv.ID)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// The index key and the invoice are written at once: one round trip to
	// the server instead of two, on the path from order.created to a listed
	// invoice. The index key is written by every Create, a conflicting one
	// included, and Create succeeds only when both writes did. So an invoice
	// whose index write failed (the process stopped between, or the server
	// took one write only) gets its key on the next Create for its order:
	// the redelivered order.created (the event is acked only after
	// OpenInvoice succeeded), or the first delivery for a void recorded
	// ahead of its order. An index key without its invoice is skipped by
	// List. Should the index write fail on the event's last delivery, the
	// event goes to the dead-letter stream with its invoice stored but
	// unlisted (found by its order id), as before it went there with no
	// invoice at all. A void without a user gets no key (see userIndexPrefix).
	// Both writes are one logical write, traced as one span.
	var indexErr error
	_, err = kv.Write(ctx, "create", func(ctx context.Context) (uint64, error) {
		var indexed chan error
		if inv.UserID != "" {
			indexed = make(chan error, 1)
			go func() {
				_, err := kv.Put(ctx, userIndexKey(inv.UserID, inv.OrderID), []byte("1"))
				indexed <- err
			}()
		}
		rev, err := kv.Create(ctx, inv.OrderID, b)
		if indexed != nil {
			if ierr := <-indexed; ierr != nil && (err == nil || cas.Conflict(err)) {
				indexErr = fmt.Errorf("kv index %s: %w", inv.OrderID, ierr)
				return rev, indexErr
			}
		}
		return rev, err
	})
	if indexErr != nil {
		return indexErr
	}
	if cas.Conflict(err) {
		return fmt.Errorf("%w: order %s has an invoice", domain.ErrConflict, inv.OrderID)
	}
	if err != nil {
		return fmt.Errorf("kv create %s: %w", inv.OrderID, err)
	}
	return nil
}

// Update implements app.Store. Events are appended to the record's outbox in
// the same write as the state they announce.
func (s *Store) Update(ctx context.Context, inv domain.Invoice, revision uint64, events ...app.Event) error {
	cur, rev, err := s.entry(ctx, inv.OrderID)
	if err != nil {
		return err
	}
	if rev != revision {
		return app.ErrStale
	}
	r := toRecord(inv)
	r.Outbox, r.Trace = cur.Outbox, cur.Trace
	if r.Trace.IsZero() {
		r.Trace = natsauth.TraceCarrier(ctx) // a void recorded ahead of its order
	}
	now := time.Now().UTC()
	for _, ev := range events {
		oe := outboxEvent{
			ID: ev.Type + ":" + ev.Invoice.ID, Type: ev.Type, InvoiceID: ev.Invoice.ID, OrderID: ev.Invoice.OrderID,
			UserID: ev.Invoice.UserID, AmountCents: ev.Invoice.AmountCents, RecordedAt: now,
		}
		if err := oe.seal(ctx); err != nil {
			return err
		}
		r.Outbox = append(r.Outbox, oe)
	}
	return s.put(ctx, r, revision)
}

func (s *Store) put(ctx context.Context, r record, revision uint64) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := kv.Update(ctx, r.OrderID, b, revision); err != nil {
		if cas.Conflict(err) {
			return app.ErrStale
		}
		return fmt.Errorf("kv update %s: %w", r.OrderID, err)
	}
	return nil
}

// List implements app.Store. One order's invoice is read by its key; a
// user's invoices are found through their index keys, as the stream leader
// knows them, and read one by one; without a user (not a case the service
// produces) it scans the bucket.
func (s *Store) List(ctx context.Context, f app.Filter) ([]domain.Invoice, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	if f.UserID == "" {
		return s.scan(ctx, f)
	}
	if f.OrderID != "" {
		// An order has at most one invoice, stored under its id: one read,
		// not a listing of the user's index keys (which costs the server a
		// consumer per call, and is what a client polling for its new
		// order's invoice asks most).
		r, _, err := s.entry(ctx, f.OrderID)
		switch {
		case errors.Is(err, domain.ErrNotFound):
			return []domain.Invoice{}, nil
		case err != nil:
			return nil, err
		case r.UserID != f.UserID:
			return []domain.Invoice{}, nil
		}
		return []domain.Invoice{r.invoice()}, nil
	}
	prefix := userIndexKey(f.UserID, "")
	keys, err := kv.KeysMatching(ctx, prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("kv list: %w", err)
	}
	out := []domain.Invoice{}
	for _, k := range keys {
		orderID := strings.TrimPrefix(k, prefix)
		if f.OrderID != "" && orderID != f.OrderID {
			continue
		}
		r, _, err := s.entry(ctx, orderID)
		if errors.Is(err, domain.ErrNotFound) {
			continue // index key written, invoice not (yet)
		}
		if err != nil {
			return nil, err
		}
		if r.UserID == f.UserID {
			out = append(out, r.invoice())
		}
	}
	slices.SortFunc(out, func(a, b domain.Invoice) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}

// scan reads the bucket's current values in one watch.
func (s *Store) scan(ctx context.Context, f app.Filter) ([]domain.Invoice, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kv list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	out := []domain.Invoice{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("kv list: watch closed")
			}
			if e == nil { // initial values done
				slices.SortFunc(out, func(a, b domain.Invoice) int { return b.CreatedAt.Compare(a.CreatedAt) })
				return out, nil
			}
			var r record
			if json.Unmarshal(e.Value(), &r) != nil || r.OrderID == "" {
				continue // an index key or the marker
			}
			if f.OrderID == "" || r.OrderID == f.OrderID {
				out = append(out, r.invoice())
			}
		}
	}
}

// Ready checks the bucket answers.
func (s *Store) Ready(ctx context.Context) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Status(ctx)
	return err
}
