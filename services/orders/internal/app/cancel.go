package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// A user's cancel: billing voids first, then the order moves to cancelled.

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
	o, err := s.visibleOrder(ctx, caller, id, false) // support may read others' orders, not cancel them
	if err != nil {
		return domain.Order{}, err
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
	done, err := s.finishCancel(fctx, id, intent.Reason)
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
	if _, err := s.finishCancel(sctx, pe.OrderID, pe.Reason); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			return true, false, nil // moved meanwhile
		}
		return false, false, fmt.Errorf("cancel intent %s: %w", pe.OrderID, err)
	}
	return true, true, nil
}

// finishCancel moves a pending order to cancelled and announces it, under
// the identity of ctx (the caller's, or the service's).
func (s *Service) finishCancel(ctx context.Context, id, reason string) (domain.Order, error) {
	var pe PendingEvent
	o, err := s.transition(ctx, id, "", domain.StatusCancelled, func(o domain.Order) error {
		if o.Status != domain.StatusPending {
			return fmt.Errorf("order %s is %s: %w", id, o.Status, domain.ErrConflict)
		}
		if pe.UserID == "" {
			// Sealed once: the event's data (id, organization, reason)
			// does not change between attempts.
			sealed, err := s.seal(ctx, PendingEvent{EventID: s.cfg.NewID(), Type: EventOrderCancelled, OrderID: id,
				UserID: o.UserID, Reason: reason, OccurredAt: s.cfg.Now().UTC()}, o)
			if err != nil {
				return err
			}
			pe = sealed
		}
		return s.cfg.Outbox.Add(ctx, pe)
	})
	if err != nil {
		if pe.UserID != "" {
			s.dropPending(ctx, pe)
		}
		return domain.Order{}, err
	}
	s.publish(ctx, pe)
	return o, nil
}
