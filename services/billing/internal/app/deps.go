package app

// What the use cases need from outside (adapters implement these): the
// invoices' store, the outbox, live updates and metrics.

import (
	"context"

	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// Versioned is an invoice with the store revision it was read at.
type Versioned struct {
	Invoice  domain.Invoice
	Revision uint64
}

// Filter selects invoices; empty fields match everything.
type Filter struct {
	UserID  string
	OrderID string
}

// Store keeps invoices, one per order, with optimistic concurrency.
type Store interface {
	// Get returns the invoice of orderID, or domain.ErrNotFound.
	Get(ctx context.Context, orderID string) (Versioned, error)
	// Create stores a new invoice, or returns domain.ErrConflict when the
	// order already has one.
	Create(ctx context.Context, inv domain.Invoice) error
	// Update replaces the invoice if it is still at revision, recording
	// events in the same write; a concurrent change gives ErrStale.
	Update(ctx context.Context, inv domain.Invoice, revision uint64, events ...Event) error
	// List returns the invoices matching f, newest first.
	List(ctx context.Context, f Filter) ([]domain.Invoice, error)
}

// Outbox publishes the events recorded with an invoice. Flush is a fast path
// after a write; events it cannot publish are published later by the relay.
// Resume is called on each request of userID: it seals again, under the
// identity ctx carries (theirs), their events that the relay could no longer
// publish because the token sealed with them ran out, and publishes them.
// It is best effort and costs a map lookup when nothing waits.
type Outbox interface {
	Flush(ctx context.Context, orderID string) error
	Resume(ctx context.Context, userID string)
}

// LiveUpdates tells the person an invoice belongs to that it now exists or
// is now inv.Status, for the pages they have open. It is called once the
// change is stored, carries the status only, and is best effort: it neither
// fails nor holds up the use case (the REST API stays the truth).
type LiveUpdates interface {
	InvoiceStatus(ctx context.Context, inv domain.Invoice)
}

// Metrics observes transitions (optional).
type Metrics interface {
	Transition(to domain.Status)
}

// Deps is what the use cases need. Store, Outbox and OnFlushError are
// required.
type Deps struct {
	Store  Store
	Outbox Outbox
	// OnFlushError is told when the fast path after a write could not
	// publish the write's events (the relay publishes them later); the
	// service counts and logs it.
	OnFlushError func(error)
	Metrics      Metrics     // optional
	Live         LiveUpdates // optional: no live updates sent
}
