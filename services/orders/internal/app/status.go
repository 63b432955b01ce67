package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Billing's invoice events moving orders to paid or refunded.

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

// transition moves order id to next with compare-and-set, retrying when a
// concurrent write changed the revision. wantUser, when set, must own the
// order. before runs on the freshly read order before each write attempt.
// Once the move is stored, the order's owner hears of it live.
func (s *Service) transition(ctx context.Context, id, wantUser string, next domain.Status, before func(domain.Order) error) (domain.Order, error) {
	moved := false
	o, err := cas.Retry(func() (domain.Order, error) {
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
		_, err = s.cfg.Orders.Update(ctx, o, rev)
		if errors.Is(err, domain.ErrConflict) {
			return domain.Order{}, cas.Lost(err)
		}
		if err != nil {
			return domain.Order{}, err
		}
		moved = true
		return o, nil
	})
	if moved {
		s.cfg.Live.OrderStatus(ctx, o)
	}
	return o, err
}
