package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Placing an order: prices from the catalog, the address from the users
// service, and Idempotency-Key handling.

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
	// A key is the caller's within one organization: the same key sent by
	// the same user logged in to another must not return this order.
	if caller.OrgID != "" {
		idemKey = caller.OrgID + " " + idemKey
	}
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
		o, found, err := s.awaitOrder(ctx, caller, idemKey, existing.OrderID, deadline)
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
func (s *Service) awaitOrder(ctx context.Context, caller Caller, key, orderID string, deadline time.Time) (domain.Order, bool, error) {
	const poll = 20 * time.Millisecond
	userID := caller.Subject
	for {
		o, _, err := s.cfg.Orders.Get(ctx, orderID)
		switch {
		case err == nil:
			if !caller.Owns(o) {
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
	o.OrgID = caller.OrgID
	pe, err := s.seal(ctx, PendingEvent{EventID: s.cfg.NewID(), Type: EventOrderCreated, OrderID: o.ID, UserID: o.UserID, OccurredAt: o.CreatedAt}, o)
	if err != nil {
		return domain.Order{}, err
	}
	// The outbox entry goes first: once the order exists, its event is owed.
	if err := s.cfg.Outbox.Add(ctx, pe); err != nil {
		return domain.Order{}, err
	}
	if _, err := s.cfg.Orders.Create(ctx, o); err != nil {
		s.dropPending(ctx, pe)
		return domain.Order{}, err
	}
	s.cfg.Live.OrderStatus(ctx, o)
	s.publish(ctx, pe)
	return o, nil
}
