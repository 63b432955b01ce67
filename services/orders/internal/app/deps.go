package app

// What the use cases need from outside (adapters implement these): storage,
// messaging, the users and billing services, the service's own identity.

import (
	"context"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Orders stores orders with optimistic concurrency. Every update names the
// revision it read; a mismatch is reported as domain.ErrConflict.
type Orders interface {
	// Create stores a new order; an existing id is domain.ErrConflict.
	Create(ctx context.Context, o domain.Order) (rev uint64, err error)
	// Get returns the order and its revision, or domain.ErrNotFound.
	Get(ctx context.Context, id string) (domain.Order, uint64, error)
	// Update replaces the order if its stored revision is still rev.
	Update(ctx context.Context, o domain.Order, rev uint64) (uint64, error)
	// ListByUser returns one user's orders, oldest first, without scanning
	// other users' orders.
	ListByUser(ctx context.Context, userID string) ([]domain.Order, error)
}

// EventType names an event of ORDERS_EVENTS.
type EventType string

// Event types published by this service.
const (
	EventOrderCreated   EventType = events.OrderCreated
	EventOrderCancelled EventType = events.OrderCancelled
)

// IntentCancel is an outbox entry that is never published: a user's cancel
// in progress, written before billing is asked to void. If the process dies
// (or the store fails) after billing voided but before the order moved to
// cancelled, the relay finds it and finishes the cancel, so an order is
// never left pending with a void invoice.
const IntentCancel EventType = "intent.cancel"

// PendingEvent is an outbox entry: an event that must reach ORDERS_EVENTS.
// It is written before the state change it announces, so a crash between the
// change and the publish leaves it behind for the relay.
//
// An event's entry holds it sealed (Publisher.Seal): its message with the
// token bound to it, which the caller whose request caused it was exchanged
// for. The relay publishes that and nothing else, so it needs no credential
// that could speak for the customer, and the service's own identity cannot
// announce an order nobody placed.
type PendingEvent struct {
	EventID    string
	Type       EventType
	OrderID    string
	UserID     string
	Reason     string // order.cancelled only
	OccurredAt time.Time
	Sealed     SealedEvent // events only (an IntentCancel has none)
}

// SealedEvent is an event's message with the token bound to it, in the
// publisher's encoding, and the last instant it may be published (its
// token's expiry, less the time to reach the stream).
type SealedEvent struct {
	Message   []byte
	PublishBy time.Time
}

// Usable reports whether the sealed event may still be published at now.
func (e SealedEvent) Usable(now time.Time) bool {
	return len(e.Message) > 0 && now.Before(e.PublishBy)
}

// Outbox keeps pending events until they are published.
type Outbox interface {
	Add(ctx context.Context, e PendingEvent) error
	// Remove deletes the entry; a missing entry is not an error.
	Remove(ctx context.Context, e PendingEvent) error
	// List returns every pending entry.
	List(ctx context.Context) ([]PendingEvent, error)
}

// Event is what is published. Its actor is the subject of the token it is
// sealed with.
type Event struct {
	ID         string
	Type       EventType
	UserID     string
	OccurredAt time.Time
	Order      domain.Order
	Reason     string
}

// Publisher publishes events on ORDERS_EVENTS, de-duplicated by
// "<type>:<order id>".
type Publisher interface {
	// Seal builds e's message and binds a token to it, exchanged for the
	// identity ctx carries: the caller's, or the service's own
	// (ServiceIdentity) for work no user started.
	Seal(ctx context.Context, e Event) (SealedEvent, error)
	// Publish publishes a sealed event; ctx needs no identity.
	Publish(ctx context.Context, e SealedEvent) error
}

// IdempotencyRecord binds an Idempotency-Key to the request it first came with.
type IdempotencyRecord struct {
	RequestHash string
	OrderID     string
	CreatedAt   time.Time
}

// Idempotency stores Idempotency-Key reservations per user.
type Idempotency interface {
	// Reserve atomically claims (userID, key). When the key is already
	// claimed it returns the existing record and reserved=false.
	Reserve(ctx context.Context, userID, key string, rec IdempotencyRecord) (existing IdempotencyRecord, reserved bool, err error)
	// Get returns the record, or domain.ErrNotFound.
	Get(ctx context.Context, userID, key string) (IdempotencyRecord, error)
	// Release removes a reservation whose order was never stored.
	Release(ctx context.Context, userID, key string) error
}

// Profiles asks the users service for the caller's profile, with the token
// carried by ctx.
type Profiles interface {
	// ShippingAddress returns the caller's address, nil when none is set.
	ShippingAddress(ctx context.Context) (*domain.Address, error)
}

// Billing asks the billing service to void an order's invoice, with the token
// carried by ctx. domain.ErrConflict means the invoice is already paid.
type Billing interface {
	VoidOrder(ctx context.Context, orderID string) error
}

// LiveUpdates tells the person an order belongs to that its status is now
// o.Status, for the pages they have open. It is called once the change is
// stored, carries the status only, and is best effort: it neither fails nor
// holds up the use case (the REST API stays the truth).
type LiveUpdates interface {
	OrderStatus(ctx context.Context, o domain.Order)
}

// ServiceIdentity yields a context carrying the service's own M2M token, for
// work no user started (relaying the outbox, cancelling a blocked user's
// orders). Subject is that token's sub ("<client_id>@clients").
type ServiceIdentity interface {
	Context(ctx context.Context) (context.Context, error)
	Subject() string
}
