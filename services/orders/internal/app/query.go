package app

import (
	"context"
	"fmt"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Reading orders.

// GetOrder returns an order the caller may see; any other is domain.ErrNotFound.
func (s *Service) GetOrder(ctx context.Context, caller Caller, id string) (domain.Order, error) {
	return s.visibleOrder(ctx, caller, id, caller.ReadAll)
}

// visibleOrder reads an order the caller owns, or any order when readAll;
// every other order is domain.ErrNotFound, so its existence does not leak.
func (s *Service) visibleOrder(ctx context.Context, caller Caller, id string, readAll bool) (domain.Order, error) {
	o, _, err := s.cfg.Orders.Get(ctx, id)
	if err != nil {
		return domain.Order{}, err
	}
	if !caller.Sees(o, readAll) {
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
	all, err := s.cfg.Orders.ListByUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	// One's own list is the orders of the organization one is logged in to.
	readAll := userID != caller.Subject
	out := all[:0]
	for _, o := range all {
		if caller.Sees(o, readAll) {
			out = append(out, o)
		}
	}
	return out, nil
}
