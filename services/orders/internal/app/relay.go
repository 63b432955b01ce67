package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Publishing events, and the outbox relay for those a request could not.

// RelayOutbox publishes the events whose requests stored the state change but
// did not get to publish (NATS down, process crash). It publishes each as it
// was sealed at that request: the token bound to it is the only credential
// it carries, and the customer's token is never stored. An event whose
// token has run out (an outage longer than its lifetime) is settled as the
// service: an order.cancelled is sealed again under the service's identity
// (cancel:orders is its own permission), and an order whose order.created
// never went out is cancelled ("not_announced"), since nothing may announce
// it for the customer any more. Entries whose change was never stored are
// dropped. Cancel intents left behind are finished (billing's void asked
// again, then pending → cancelled). It returns how many entries it
// published or finished.
func (s *Service) RelayOutbox(ctx context.Context) (int, error) {
	pending, err := s.cfg.Outbox.List(ctx)
	if err != nil {
		return 0, err
	}
	now := s.cfg.Now()
	cutoff := now.Add(-s.cfg.RelayGrace)
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
		if pe.Type != IntentCancel && pe.Sealed.Usable(now) {
			if err := s.cfg.Publisher.Publish(ctx, pe.Sealed); err != nil {
				errs = append(errs, fmt.Errorf("relay %s %s: %w", pe.Type, pe.OrderID, err))
				continue
			}
			s.dropPending(ctx, pe)
			n++
			continue
		}
		if sctx == nil {
			if sctx, err = s.cfg.Identity.Context(ctx); err != nil {
				return n, fmt.Errorf("service identity: %w", err)
			}
		}
		done, err := s.settle(sctx, pe, o)
		if err != nil {
			errs = append(errs, err)
		}
		if done {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// settle finishes, as the service (sctx), an entry that has no usable sealed
// event: a cancel intent, or an event whose token ran out. done: it
// published or cancelled something.
func (s *Service) settle(sctx context.Context, pe PendingEvent, o domain.Order) (done bool, err error) {
	switch pe.Type {
	case IntentCancel:
		settled, cancelled, err := s.finishIntent(sctx, pe, o)
		if settled {
			s.dropPending(sctx, pe)
		}
		return cancelled, err
	case EventOrderCancelled:
		resealed, err := s.seal(sctx, pe, o)
		if err == nil {
			err = s.cfg.Publisher.Publish(sctx, resealed.Sealed)
		}
		if err != nil {
			return false, fmt.Errorf("relay %s %s as the service: %w", pe.Type, pe.OrderID, err)
		}
		s.dropPending(sctx, pe)
		return true, nil
	case EventOrderCreated:
		s.log.WarnContext(sctx, "order.created expired in the outbox; cancelling the order", "order_id", pe.OrderID)
		settled, cancelled, err := s.finishIntent(sctx, PendingEvent{Type: IntentCancel, OrderID: pe.OrderID, Reason: "not_announced"}, o)
		if settled {
			s.dropPending(sctx, pe)
		}
		return cancelled, err
	default:
		return false, fmt.Errorf("relay: unknown outbox entry type %q", pe.Type)
	}
}

// seal returns pe with its event, about o, sealed under ctx's identity.
func (s *Service) seal(ctx context.Context, pe PendingEvent, o domain.Order) (PendingEvent, error) {
	sealed, err := s.cfg.Publisher.Seal(ctx, Event{ID: pe.EventID, Type: pe.Type, UserID: o.UserID, OccurredAt: pe.OccurredAt, Order: o, Reason: pe.Reason})
	if err != nil {
		return pe, fmt.Errorf("seal %s: %w", pe.Type, err)
	}
	pe.Sealed = sealed
	return pe, nil
}

// publish publishes the sealed event of pe and clears its outbox entry. A
// failure is logged, not returned: the state change is already stored and
// the relay will publish the event.
func (s *Service) publish(ctx context.Context, pe PendingEvent) {
	if err := s.cfg.Publisher.Publish(ctx, pe.Sealed); err != nil {
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
