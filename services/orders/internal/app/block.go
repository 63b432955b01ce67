package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// A blocked user's pending orders, cancelled by the service.

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
			if _, err := s.finishCancel(sctx, o.ID, "user_blocked"); err != nil {
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
