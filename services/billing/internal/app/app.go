// Package app holds billing's use cases. It declares what it needs from the
// outside (Store, Outbox) and knows nothing of NATS, HTTP or tokens.
package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// Event types billing publishes.
const (
	EventInvoicePaid     = events.InvoicePaid
	EventInvoiceRefunded = events.InvoiceRefunded
)

// Event is a state change to announce. The Store writes it together with the
// invoice (same record, same compare-and-set), so it cannot be lost.
type Event struct {
	Type    string
	Invoice domain.Invoice
}

// ErrStale reports a lost compare-and-set: re-read and try again.
var ErrStale = errors.New("invoice changed concurrently")

// Caller is who asks, as the ports see it.
type Caller struct {
	Subject    string
	OrgID      string // the organization of the caller's token ("" none)
	Service    bool   // an M2M token (the orders service), not a user
	CanReadAll bool   // read:all-invoices (within OrgID when it is set)
}

// owns reports whether inv is the caller's: the same user under the same
// organization (or both under none). Auth0's rule for an API is to enforce
// org_id when a token carries one; an invoice of an organization is
// likewise invisible to a token of none.
func (c Caller) owns(inv domain.Invoice) bool { return inv.UserID == c.Subject && inv.OrgID == c.OrgID }

// inScope reports whether inv is within the caller's organization for the
// permissions that reach any user's invoices (read:all-invoices,
// refund:invoices): a token of an organization reaches that organization's
// invoices only; one of none (platform support, the services) reaches all.
func (c Caller) inScope(inv domain.Invoice) bool { return c.OrgID == "" || inv.OrgID == c.OrgID }

// sees reports whether the caller may read inv.
func (c Caller) sees(inv domain.Invoice) bool {
	if c.CanReadAll {
		return c.inScope(inv)
	}
	return c.owns(inv)
}

// Service is billing's use cases.
type Service struct {
	store   Store
	outbox  Outbox
	now     func() time.Time
	metrics Metrics
	onFlush func(error)
	live    LiveUpdates
}

// New returns the use cases over d.
func New(d Deps) (*Service, error) {
	if d.Store == nil || d.Outbox == nil || d.OnFlushError == nil {
		return nil, errors.New("app: Store, Outbox and OnFlushError are required")
	}
	return &Service{store: d.Store, outbox: d.Outbox, now: time.Now, metrics: d.Metrics, onFlush: d.OnFlushError, live: d.Live}, nil
}

// announce tells inv's owner, if it has one yet, of its stored state.
func (s *Service) announce(ctx context.Context, inv domain.Invoice) {
	if s.live != nil && inv.UserID != "" {
		s.live.InvoiceStatus(ctx, inv)
	}
}

// mutate reads the invoice of orderID, applies change and writes it back
// with compare-and-set, re-reading on a lost race. change decides from the
// latest state, so of two concurrent transitions exactly one wins and the
// other sees the winner's state (and, for incompatible ones, a conflict).
func (s *Service) mutate(ctx context.Context, orderID string, change func(inv *domain.Invoice) ([]Event, bool, error)) (domain.Invoice, error) {
	var (
		was    domain.Invoice
		events []Event
		wrote  bool
	)
	inv, err := cas.Retry(func() (domain.Invoice, error) {
		cur, err := s.store.Get(ctx, orderID)
		if err != nil {
			return domain.Invoice{}, err
		}
		inv := cur.Invoice
		evs, changed, err := change(&inv)
		if err != nil || !changed {
			return inv, err
		}
		if err := s.store.Update(ctx, inv, cur.Revision, evs...); errors.Is(err, ErrStale) {
			return domain.Invoice{}, cas.Lost(err)
		} else if err != nil {
			return domain.Invoice{}, err
		}
		was, events, wrote = cur.Invoice, evs, true
		return inv, nil
	})
	if errors.Is(err, cas.ErrContended) {
		return domain.Invoice{}, fmt.Errorf("%w: too much contention on order %s", domain.ErrConflict, orderID)
	}
	if err != nil || !wrote {
		return inv, err
	}
	if s.metrics != nil && inv.Status != was.Status {
		s.metrics.Transition(inv.Status)
	}
	if inv.Status != was.Status || inv.UserID != was.UserID {
		// A new owner (the order's created event filling in an invoice
		// voided ahead of it) has not heard of it yet.
		s.announce(ctx, inv)
	}
	if len(events) > 0 {
		if err := s.outbox.Flush(ctx, orderID); err != nil {
			s.onFlush(err)
		}
	}
	return inv, nil
}

// visible returns the invoice when the caller may see it; someone else's
// invoice is "not found", so ids cannot be probed.
func (s *Service) visible(ctx context.Context, c Caller, invoiceID string) (string, error) {
	orderID, err := domain.OrderIDOf(invoiceID)
	if err != nil {
		return "", err
	}
	cur, err := s.store.Get(ctx, orderID)
	if err != nil {
		return "", err
	}
	if !c.sees(cur.Invoice) {
		return "", fmt.Errorf("%w: %s", domain.ErrNotFound, invoiceID)
	}
	return orderID, nil
}

// Get returns an invoice the caller owns, or any with read:all-invoices.
func (s *Service) Get(ctx context.Context, c Caller, invoiceID string) (domain.Invoice, error) {
	s.outbox.Resume(ctx, c.Subject)
	orderID, err := s.visible(ctx, c, invoiceID)
	if err != nil {
		return domain.Invoice{}, err
	}
	cur, err := s.store.Get(ctx, orderID)
	return cur.Invoice, err
}

// List returns the caller's invoices, or user f.UserID's when the caller
// may read all (the ports check the permission before asking).
func (s *Service) List(ctx context.Context, c Caller, f Filter) ([]domain.Invoice, error) {
	s.outbox.Resume(ctx, c.Subject)
	if f.UserID == "" {
		f.UserID = c.Subject
	} else if f.UserID != c.Subject && !c.CanReadAll {
		return nil, fmt.Errorf("%w: other users' invoices", domain.ErrNotFound)
	}
	if f.OrderID != "" {
		cur, err := s.store.Get(ctx, f.OrderID)
		if errors.Is(err, domain.ErrNotFound) {
			return []domain.Invoice{}, nil
		}
		if err != nil {
			return nil, err
		}
		if cur.Invoice.UserID != f.UserID || !c.listed(cur.Invoice, f.UserID) {
			return []domain.Invoice{}, nil
		}
		return []domain.Invoice{cur.Invoice}, nil
	}
	all, err := s.store.List(ctx, f)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, inv := range all {
		if c.listed(inv, f.UserID) {
			out = append(out, inv)
		}
	}
	return out, nil
}

// listed reports whether inv of user belongs in the caller's list: one's
// own list is the invoices of the organization one is logged in to; another
// user's (read:all-invoices) those within the caller's organization.
func (c Caller) listed(inv domain.Invoice, user string) bool {
	if user == c.Subject {
		return c.owns(inv)
	}
	return c.inScope(inv)
}

// Pay pays the caller's own open invoice.
func (s *Service) Pay(ctx context.Context, c Caller, invoiceID string) (domain.Invoice, error) {
	s.outbox.Resume(ctx, c.Subject)
	orderID, err := domain.OrderIDOf(invoiceID)
	if err != nil {
		return domain.Invoice{}, err
	}
	now := s.now()
	return s.mutate(ctx, orderID, func(inv *domain.Invoice) ([]Event, bool, error) {
		if !c.owns(*inv) {
			return nil, false, fmt.Errorf("%w: %s", domain.ErrNotFound, invoiceID)
		}
		if err := inv.Pay(now); err != nil {
			return nil, false, err
		}
		return []Event{{Type: EventInvoicePaid, Invoice: *inv}}, true, nil
	})
}

// Refund refunds a paid invoice (the route requires refund:invoices, which
// acts on any user's invoice).
func (s *Service) Refund(ctx context.Context, c Caller, invoiceID string) (domain.Invoice, error) {
	orderID, err := domain.OrderIDOf(invoiceID)
	if err != nil {
		return domain.Invoice{}, err
	}
	return s.mutate(ctx, orderID, func(inv *domain.Invoice) ([]Event, bool, error) {
		if !c.inScope(*inv) {
			return nil, false, fmt.Errorf("%w: %s", domain.ErrNotFound, invoiceID)
		}
		if err := inv.Refund(); err != nil {
			return nil, false, err
		}
		return []Event{{Type: EventInvoiceRefunded, Invoice: *inv}}, true, nil
	})
}

// VoidOrder voids an order's open invoice for a cancel (the orders service
// asks before it cancels: this is where a concurrent pay and cancel are
// decided). With no invoice yet it records a void one, so the late created
// event cannot open it. A paid invoice is a conflict: the payment won.
// A user may void only their own order's invoice; the orders service any.
func (s *Service) VoidOrder(ctx context.Context, c Caller, orderID string) (domain.Invoice, error) {
	if !domain.ValidOrderID(orderID) {
		return domain.Invoice{}, fmt.Errorf("%w: order id %q", domain.ErrInvalid, orderID)
	}
	inv, err := cas.Retry(func() (domain.Invoice, error) {
		inv, err := s.mutate(ctx, orderID, func(inv *domain.Invoice) ([]Event, bool, error) {
			if !c.Service && inv.UserID != "" && !c.owns(*inv) {
				return nil, false, fmt.Errorf("%w: order %s", domain.ErrNotFound, orderID)
			}
			changed, err := inv.Void()
			return nil, changed, err
		})
		if !errors.Is(err, domain.ErrNotFound) || inv.ID != "" {
			return inv, err // decided by mutate, ownership included
		}
		// No invoice when mutate looked. One created since (the created
		// event arriving now) makes Create conflict, and the next round lets
		// mutate decide on it: judging it here instead took the caller's own
		// fresh invoice for someone else's.
		owner := ""
		if !c.Service {
			owner = c.Subject
		}
		void, err := domain.NewVoidInvoice(orderID, owner, s.now())
		if err != nil {
			return domain.Invoice{}, err
		}
		if !c.Service {
			void.OrgID = c.OrgID
		}
		if err := s.store.Create(ctx, *void); errors.Is(err, domain.ErrConflict) {
			return domain.Invoice{}, cas.Lost(err) // created meanwhile: decide on it
		} else if err != nil {
			return domain.Invoice{}, err
		}
		if s.metrics != nil {
			s.metrics.Transition(domain.StatusVoid)
		}
		s.announce(ctx, *void)
		return *void, nil
	})
	if errors.Is(err, cas.ErrContended) {
		return domain.Invoice{}, fmt.Errorf("%w: too much contention on order %s", domain.ErrConflict, orderID)
	}
	return inv, err
}

// OrderCreated is what billing needs from an order.created event.
type OrderCreated struct {
	OrderID     string
	UserID      string
	OrgID       string // the organization the order was placed under
	AmountCents int64
	Currency    string
}

// OpenInvoice opens the invoice of a new order. However often the event is
// delivered there is one invoice: the store creates a key per order at most
// once. An order cancelled before this event keeps its void invoice, which
// only gets its figures filled in.
func (s *Service) OpenInvoice(ctx context.Context, o OrderCreated) error {
	inv, err := domain.NewInvoice(o.OrderID, o.UserID, o.AmountCents, o.Currency, s.now())
	if err != nil {
		return err
	}
	inv.OrgID = o.OrgID
	err = s.store.Create(ctx, *inv)
	if err == nil {
		if s.metrics != nil {
			s.metrics.Transition(domain.StatusOpen)
		}
		s.announce(ctx, *inv)
		return nil
	}
	if !errors.Is(err, domain.ErrConflict) {
		return err
	}
	_, err = s.mutate(ctx, o.OrderID, func(cur *domain.Invoice) ([]Event, bool, error) {
		if !cur.Billed && cur.UserID != "" && (cur.UserID != o.UserID || cur.OrgID != o.OrgID) {
			// Voided ahead of its order by a user who does not own it: that
			// void was never theirs to make, so the owner's invoice opens.
			*cur = *inv
			return nil, true, nil
		}
		changed, err := cur.FillIn(o.UserID, o.AmountCents, o.Currency)
		if changed {
			cur.OrgID = o.OrgID // voided ahead by the orders service, which names no organization
		}
		return nil, changed, err
	})
	return err
}

// OrderCancelled voids the invoice of userID's cancelled order (normally
// already void: orders asks billing before cancelling; this covers the event
// arriving on its own). A paid invoice stays paid: that conflict was decided
// already. An invoice of another user is not touched (domain.ErrNotFound):
// the event's user is its order's owner, whoever signed it.
func (s *Service) OrderCancelled(ctx context.Context, orderID, userID, orgID string) error {
	if userID == "" {
		return fmt.Errorf("%w: order.cancelled without a user", domain.ErrInvalid)
	}
	_, err := s.VoidOrder(ctx, Caller{Subject: userID, OrgID: orgID}, orderID)
	if errors.Is(err, domain.ErrConflict) {
		return nil
	}
	return err
}
