package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Publishing events, and the outbox relay for those a request could not.

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
