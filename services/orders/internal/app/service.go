package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Config of the Service. Orders, Outbox, Idempotency, Publisher, Profiles,
// Billing and Identity are required.
type Config struct {
	Catalog     *domain.Catalog // default domain.SeedCatalog()
	Orders      Orders
	Outbox      Outbox
	Idempotency Idempotency
	Publisher   Publisher
	Profiles    Profiles
	Billing     Billing
	Identity    ServiceIdentity
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // default time.Now
	NewID       func() string    // default random UUIDv4

	// IdempotencyWait bounds how long a request that finds its key claimed by
	// an in-flight request waits for that request's order (default 5 s).
	IdempotencyWait time.Duration
	// RelayGrace: outbox entries younger than this are left to the request that
	// wrote them (default 5 s); an entry whose order never appeared is dropped
	// after it.
	RelayGrace time.Duration
}

// Service implements the orders use cases.
type Service struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Catalog == nil {
		cfg.Catalog = domain.SeedCatalog()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = NewUUID
	}
	if cfg.IdempotencyWait <= 0 {
		cfg.IdempotencyWait = 5 * time.Second
	}
	if cfg.RelayGrace <= 0 {
		cfg.RelayGrace = 5 * time.Second
	}
	switch {
	case cfg.Orders == nil, cfg.Outbox == nil, cfg.Idempotency == nil, cfg.Publisher == nil:
		return nil, errors.New("app: Orders, Outbox, Idempotency and Publisher are required")
	case cfg.Profiles == nil, cfg.Billing == nil, cfg.Identity == nil:
		return nil, errors.New("app: Profiles, Billing and Identity are required")
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Catalog returns the products for sale.
func (s *Service) Catalog() []domain.Product { return s.cfg.Catalog.Products() }

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

// PlaceOrder creates a pending order for the caller with server-side prices
// and the caller's shipping address from the users service.
//
// With an idempotency key, the same key from the same user never makes a
// second order: the same request gets the first order back (replayed=true),
// a different one domain.ErrIdempotencyMismatch. The key is claimed with a KV
// create, so concurrent requests with one key make one order.
func (s *Service) PlaceOrder(ctx context.Context, caller Caller, idemKey string, req []domain.LineRequest) (o domain.Order, replayed bool, err error) {
	if caller.Subject == "" {
		return domain.Order{}, false, errors.New("place order: no caller")
	}
	if _, _, err := domain.ValidateLines(req, s.cfg.Catalog); err != nil {
		return domain.Order{}, false, err
	}
	if idemKey == "" {
		o, err := s.create(ctx, caller, s.cfg.NewID(), req)
		return o, false, err
	}
	if len(idemKey) > MaxIdempotencyKeyLen {
		return domain.Order{}, false, &domain.ValidationError{Fields: map[string]string{
			"Idempotency-Key": fmt.Sprintf("must be at most %d characters", MaxIdempotencyKeyLen)}}
	}
	hash := RequestHash(req)
	deadline := s.cfg.Now().Add(s.cfg.IdempotencyWait)
	for {
		rec := IdempotencyRecord{RequestHash: hash, OrderID: s.cfg.NewID(), CreatedAt: s.cfg.Now().UTC()}
		existing, reserved, err := s.cfg.Idempotency.Reserve(ctx, caller.Subject, idemKey, rec)
		if err != nil {
			return domain.Order{}, false, err
		}
		if reserved {
			o, err := s.create(ctx, caller, rec.OrderID, req)
			if err != nil {
				// Free the key so that a retry of the same request can succeed.
				if rerr := s.cfg.Idempotency.Release(context.WithoutCancel(ctx), caller.Subject, idemKey); rerr != nil {
					s.log.WarnContext(ctx, "idempotency key not released", "err", rerr)
				}
				return domain.Order{}, false, err
			}
			return o, false, nil
		}
		if existing.RequestHash != hash {
			return domain.Order{}, false, domain.ErrIdempotencyMismatch
		}
		o, found, err := s.awaitOrder(ctx, caller.Subject, idemKey, existing.OrderID, deadline)
		if err != nil {
			return domain.Order{}, false, err
		}
		if found {
			return o, true, nil
		}
		// The first request failed and released the key: claim it again.
	}
}

// awaitOrder waits for the order an in-flight request with the same key is
// creating. found=false means that request gave the key up.
func (s *Service) awaitOrder(ctx context.Context, userID, key, orderID string, deadline time.Time) (domain.Order, bool, error) {
	const poll = 20 * time.Millisecond
	for {
		o, _, err := s.cfg.Orders.Get(ctx, orderID)
		switch {
		case err == nil:
			if o.UserID != userID {
				return domain.Order{}, false, fmt.Errorf("idempotency record points at another user's order: %w", domain.ErrConflict)
			}
			return o, true, nil
		case !errors.Is(err, domain.ErrNotFound):
			return domain.Order{}, false, err
		}
		rec, err := s.cfg.Idempotency.Get(ctx, userID, key)
		switch {
		case errors.Is(err, domain.ErrNotFound):
			return domain.Order{}, false, nil
		case err != nil:
			return domain.Order{}, false, err
		case rec.OrderID != orderID:
			orderID = rec.OrderID // re-claimed by another request meanwhile
		}
		if s.cfg.Now().After(deadline) {
			return domain.Order{}, false, fmt.Errorf("a request with this Idempotency-Key is still in progress: %w", domain.ErrConflict)
		}
		select {
		case <-ctx.Done():
			return domain.Order{}, false, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// RequestHash identifies an order request independently of JSON formatting.
func RequestHash(req []domain.LineRequest) string {
	h := sha256.New()
	for _, l := range req {
		fmt.Fprintf(h, "%q:%d\n", l.SKU, l.Quantity)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Service) create(ctx context.Context, caller Caller, id string, req []domain.LineRequest) (domain.Order, error) {
	addr, err := s.cfg.Profiles.ShippingAddress(ctx)
	if err != nil {
		return domain.Order{}, fmt.Errorf("caller's profile: %w", err)
	}
	o, err := domain.NewOrder(id, caller.Subject, req, s.cfg.Catalog, addr, s.cfg.Now())
	if err != nil {
		return domain.Order{}, err
	}
	pe := PendingEvent{EventID: s.cfg.NewID(), Type: EventOrderCreated, OrderID: o.ID, UserID: o.UserID, OccurredAt: o.CreatedAt}
	// The outbox entry goes first: once the order exists, its event is owed.
	if err := s.cfg.Outbox.Add(ctx, pe); err != nil {
		return domain.Order{}, err
	}
	if _, err := s.cfg.Orders.Create(ctx, o); err != nil {
		s.dropPending(ctx, pe)
		return domain.Order{}, err
	}
	s.publish(ctx, pe, caller.Subject, o)
	return o, nil
}

// publish sends the event with the token in ctx and clears its outbox entry.
// A failure is logged, not returned: the state change is already stored and
// the relay will publish the event.
func (s *Service) publish(ctx context.Context, pe PendingEvent, actor string, o domain.Order) {
	ev := Event{ID: pe.EventID, Type: pe.Type, Actor: actor, UserID: o.UserID, OccurredAt: pe.OccurredAt, Order: o, Reason: pe.Reason}
	if err := s.cfg.Publisher.Publish(ctx, ev); err != nil {
		s.log.WarnContext(ctx, "event left to the outbox relay", "type", pe.Type, "order_id", pe.OrderID, "err", err)
		return
	}
	s.dropPending(ctx, pe)
}

func (s *Service) dropPending(ctx context.Context, pe PendingEvent) {
	if err := s.cfg.Outbox.Remove(context.WithoutCancel(ctx), pe); err != nil {
		// Harmless: the relay republishes, and Nats-Msg-Id plus idempotent
		// consumers absorb the duplicate.
		s.log.WarnContext(ctx, "outbox entry not removed", "order_id", pe.OrderID, "err", err)
	}
}

// GetOrder returns an order the caller may see; any other is domain.ErrNotFound.
func (s *Service) GetOrder(ctx context.Context, caller Caller, id string) (domain.Order, error) {
	o, _, err := s.cfg.Orders.Get(ctx, id)
	if err != nil {
		return domain.Order{}, err
	}
	if o.UserID != caller.Subject && !caller.ReadAll {
		return domain.Order{}, fmt.Errorf("order %s: %w", id, domain.ErrNotFound)
	}
	return o, nil
}

// ListOrders returns the orders of userID (the caller's when empty). Reading
// another user's orders needs Caller.ReadAll, else domain.ErrForbidden.
func (s *Service) ListOrders(ctx context.Context, caller Caller, userID string) ([]domain.Order, error) {
	if userID == "" {
		userID = caller.Subject
	}
	if userID != caller.Subject && !caller.ReadAll {
		return nil, domain.ErrForbidden
	}
	return s.cfg.Orders.ListByUser(ctx, userID)
}

// CancelOrder cancels the caller's own pending order: billing voids the
// invoice first (it arbitrates against a concurrent pay), then the order moves
// to cancelled by compare-and-set.
//
// Once billing voided, the cancel must finish: the second step runs detached
// from the request (a client hang-up must not stop it), and an IntentCancel
// entry written before the void lets the relay finish it if this process dies
// or the store fails in between. A void whose outcome is unknown (timeout,
// billing unreachable) keeps the intent too: billing may have voided, and
// the relay's void, idempotent for a void invoice, settles it either way (a
// 409 there means the payment won, and the intent is dropped).
func (s *Service) CancelOrder(ctx context.Context, caller Caller, id string) (domain.Order, error) {
	o, _, err := s.cfg.Orders.Get(ctx, id)
	if err != nil {
		return domain.Order{}, err
	}
	if o.UserID != caller.Subject {
		return domain.Order{}, fmt.Errorf("order %s: %w", id, domain.ErrNotFound)
	}
	if o.Status != domain.StatusPending {
		return domain.Order{}, fmt.Errorf("order %s is %s: %w", id, o.Status, domain.ErrConflict)
	}
	intent := PendingEvent{EventID: s.cfg.NewID(), Type: IntentCancel, OrderID: id, UserID: o.UserID,
		Reason: "cancelled_by_user", OccurredAt: s.cfg.Now().UTC()}
	if err := s.cfg.Outbox.Add(ctx, intent); err != nil {
		return domain.Order{}, err
	}
	if err := s.cfg.Billing.VoidOrder(ctx, id); err != nil {
		if !outcomeUnknown(err) {
			s.dropPending(ctx, intent) // billing refused: nothing to finish
		}
		return domain.Order{}, err
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	done, err := s.finishCancel(fctx, caller.Subject, id, intent.Reason)
	if errors.Is(err, domain.ErrConflict) {
		// Someone finished it first (the relay on a slow request, or a
		// block): the caller's cancel happened all the same.
		if cur, _, gerr := s.cfg.Orders.Get(fctx, id); gerr == nil && cur.Status == domain.StatusCancelled {
			done, err = cur, nil
		}
	} else if err != nil {
		return domain.Order{}, err // the intent stays: the relay finishes
	}
	s.dropPending(fctx, intent)
	return done, err
}

// finishTimeout bounds the detached second step of a cancel.
const finishTimeout = 10 * time.Second

// outcomeUnknown: the request may or may not have reached billing.
func outcomeUnknown(err error) bool {
	return errors.Is(err, domain.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// finishIntent completes a cancel whose request did not (see CancelOrder),
// under the service's identity. settled: the intent is done with (finished
// here, or moot) and may be dropped; cancelled: this call cancelled the order.
func (s *Service) finishIntent(sctx context.Context, pe PendingEvent, o domain.Order) (settled, cancelled bool, err error) {
	if o.Status != domain.StatusPending {
		return true, false, nil // cancelled by the request itself, or paid: nothing left
	}
	if err := s.cfg.Billing.VoidOrder(sctx, pe.OrderID); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			return true, false, nil // the payment won; the order becomes paid by its event
		}
		return false, false, fmt.Errorf("cancel intent %s: void: %w", pe.OrderID, err)
	}
	if _, err := s.finishCancel(sctx, s.cfg.Identity.Subject(), pe.OrderID, pe.Reason); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			return true, false, nil // moved meanwhile
		}
		return false, false, fmt.Errorf("cancel intent %s: %w", pe.OrderID, err)
	}
	return true, true, nil
}

// maxCASAttempts bounds compare-and-set retries when unrelated writes race.
const maxCASAttempts = 8

func (s *Service) finishCancel(ctx context.Context, actor, id, reason string) (domain.Order, error) {
	pe := PendingEvent{EventID: s.cfg.NewID(), Type: EventOrderCancelled, OrderID: id, Reason: reason, OccurredAt: s.cfg.Now().UTC()}
	o, err := s.transition(ctx, id, "", domain.StatusCancelled, func(o domain.Order) error {
		if o.Status != domain.StatusPending {
			return fmt.Errorf("order %s is %s: %w", id, o.Status, domain.ErrConflict)
		}
		pe.UserID = o.UserID
		return s.cfg.Outbox.Add(ctx, pe)
	})
	if err != nil {
		if pe.UserID != "" {
			s.dropPending(ctx, pe)
		}
		return domain.Order{}, err
	}
	s.publish(ctx, pe, actor, o)
	return o, nil
}

// transition moves order id to next with compare-and-set, retrying when a
// concurrent write changed the revision. wantUser, when set, must own the
// order. before runs on the freshly read order before each write attempt.
func (s *Service) transition(ctx context.Context, id, wantUser string, next domain.Status, before func(domain.Order) error) (domain.Order, error) {
	for attempt := 0; ; attempt++ {
		o, rev, err := s.cfg.Orders.Get(ctx, id)
		if err != nil {
			return domain.Order{}, err
		}
		if wantUser != "" && o.UserID != wantUser {
			return domain.Order{}, fmt.Errorf("order %s belongs to another user: %w", id, domain.ErrForbidden)
		}
		if before != nil {
			if err := before(o); err != nil {
				return domain.Order{}, err
			}
		}
		changed, err := o.Transition(next, s.cfg.Now())
		if err != nil || !changed {
			return o, err
		}
		if _, err := s.cfg.Orders.Update(ctx, o, rev); err == nil {
			return o, nil
		} else if !errors.Is(err, domain.ErrConflict) || attempt+1 >= maxCASAttempts {
			return domain.Order{}, err
		}
	}
}

// ApplyInvoiceStatus applies billing's invoice.paid (next = paid) or
// invoice.refunded (next = refunded) to the order. A redelivered event is a
// no-op; an impossible move or an order of another user is an error the
// consumer treats as permanent.
func (s *Service) ApplyInvoiceStatus(ctx context.Context, orderID, userID string, next domain.Status) error {
	if next != domain.StatusPaid && next != domain.StatusRefunded {
		return fmt.Errorf("invoice event cannot make an order %s: %w", next, domain.ErrValidation)
	}
	_, err := s.transition(ctx, orderID, userID, next, nil)
	return err
}

// CancelPendingForUser cancels every pending order of a blocked user with the
// service's own identity, each through billing's void first. An order billing
// reports as paid is left alone. It returns how many orders it cancelled.
//
// Orders are independent of each other, so up to cancelPendingParallel of them
// are handled at once: one at a time, a user with a hundred pending orders
// took seconds. Every order is tried; the failures are joined.
func (s *Service) CancelPendingForUser(ctx context.Context, userID string) (int, error) {
	sctx, err := s.cfg.Identity.Context(ctx)
	if err != nil {
		return 0, fmt.Errorf("service identity: %w", err)
	}
	orders, err := s.cfg.Orders.ListByUser(ctx, userID)
	if err != nil {
		return 0, err
	}
	var (
		n    atomic.Int64
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	var g errgroup.Group
	g.SetLimit(cancelPendingParallel)
	for _, o := range orders {
		if o.Status != domain.StatusPending {
			continue
		}
		g.Go(func() error {
			if err := s.cfg.Billing.VoidOrder(sctx, o.ID); err != nil {
				if !errors.Is(err, domain.ErrConflict) { // a conflict: paid meanwhile, the pay won
					fail(fmt.Errorf("void %s: %w", o.ID, err))
				}
				return nil
			}
			if _, err := s.finishCancel(sctx, s.cfg.Identity.Subject(), o.ID, "user_blocked"); err != nil {
				if !errors.Is(err, domain.ErrConflict) {
					fail(fmt.Errorf("cancel %s: %w", o.ID, err))
				}
				return nil
			}
			n.Add(1)
			return nil
		})
	}
	_ = g.Wait() // the goroutines report through fail, so every order is tried
	return int(n.Load()), errors.Join(errs...)
}

// cancelPendingParallel bounds the orders CancelPendingForUser handles at once
// (each is a billing request and a KV compare-and-set).
const cancelPendingParallel = 8

// RelayOutbox publishes the events whose requests stored the state change but
// did not get to publish (NATS down, process crash). It publishes with the
// service's own M2M token and actor = its subject: the user's token is not
// stored (it is a credential) and may have expired by then. Entries whose
// change was never stored are dropped. Cancel intents left behind are
// finished (billing's void asked again, then pending → cancelled). It returns
// how many entries it published or finished.
func (s *Service) RelayOutbox(ctx context.Context) (int, error) {
	pending, err := s.cfg.Outbox.List(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := s.cfg.Now().Add(-s.cfg.RelayGrace)
	var sctx context.Context
	n := 0
	var errs []error
	for _, pe := range pending {
		if pe.OccurredAt.After(cutoff) {
			continue
		}
		o, _, err := s.cfg.Orders.Get(ctx, pe.OrderID)
		switch {
		case errors.Is(err, domain.ErrNotFound):
			s.dropPending(ctx, pe) // the order was never stored
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if pe.Type == EventOrderCancelled && o.Status != domain.StatusCancelled {
			s.dropPending(ctx, pe) // the cancel lost its compare-and-set
			continue
		}
		if sctx == nil {
			if sctx, err = s.cfg.Identity.Context(ctx); err != nil {
				return n, fmt.Errorf("service identity: %w", err)
			}
		}
		if pe.Type == IntentCancel {
			settled, cancelled, err := s.finishIntent(sctx, pe, o)
			if err != nil {
				errs = append(errs, err)
			}
			if settled {
				s.dropPending(ctx, pe)
			}
			if cancelled {
				n++
			}
			continue
		}
		ev := Event{ID: pe.EventID, Type: pe.Type, Actor: s.cfg.Identity.Subject(), UserID: o.UserID, OccurredAt: pe.OccurredAt, Order: o, Reason: pe.Reason}
		if err := s.cfg.Publisher.Publish(sctx, ev); err != nil {
			errs = append(errs, fmt.Errorf("relay %s %s: %w", pe.Type, pe.OrderID, err))
			continue
		}
		s.dropPending(ctx, pe)
		n++
	}
	return n, errors.Join(errs...)
}
