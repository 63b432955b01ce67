package adapters

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/billing/internal/app"
)

// Order event types billing consumes.
const (
	EventOrderCreated   = "order.created"
	EventOrderCancelled = "order.cancelled"
)

type orderCreatedData struct {
	OrderID    string `json:"order_id"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

type orderCancelledData struct {
	OrderID string `json:"order_id"`
}

// NewOrdersConsumer returns the durable consumer of ORDERS_EVENTS. Events on
// another user's behalf (the orders service cancelling a blocked user's
// orders) need an M2M token of the orders service (client ordersClient)
// with cancel:orders.
//
// M2MOnly matters: Clients restricts M2M tokens only, and every customer
// holds cancel:orders, so without it any customer's token would pass as
// "acting on another user's data". No user, not even an admin, cancels or
// creates someone else's order through orders (its cancel is owner-only), so
// a user-signed event about another user's order is never legitimate.
//
// The orders service provisions the durable (its filter and delivery
// settings are in pkg/platform/mesh); billing only binds to it through js,
// the orders account's JetStream API as billing's account imports it.
func NewOrdersConsumer(js jetstream.JetStream, v natsauth.Verifier, m *natsauth.Metrics, svc *app.Service, ordersClient string, log *slog.Logger) (*natsauth.Consumer, error) {
	cfg, err := mesh.Bind(mesh.Billing, natsauth.ConsumerConfig{
		Stream:           OrdersStream,
		Durable:          OrdersDurable,
		DeadLetterPrefix: DLQPrefix,
		OnBehalfPolicy:   OrdersOnBehalfPolicy(ordersClient),
		// An order's created and cancelled events go to the same worker, in
		// order; invoices of different orders are opened at once (the
		// handler waits on KV round trips, not on CPU).
		Workers: 8,
		Metrics: m,
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}
	return natsauth.NewConsumer(js, v, cfg, func(ctx context.Context, ev *natsauth.Event) error {
		return handleOrderEvent(ctx, svc, ev)
	})
}

// OrdersOnBehalfPolicy is what an order event about another user than its
// signer needs (see NewOrdersConsumer).
func OrdersOnBehalfPolicy(ordersClient string) authz.Policy {
	return authz.RequireAll("cancel:orders").Clients(ordersClient).M2MOnly()
}

func handleOrderEvent(ctx context.Context, svc *app.Service, ev *natsauth.Event) error {
	switch ev.Type {
	case EventOrderCreated:
		var d orderCreatedData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("order.created data: %w", err)
		}
		return svc.OpenInvoice(ctx, app.OrderCreated{OrderID: d.OrderID, UserID: ev.UserID, AmountCents: d.TotalCents, Currency: d.Currency})
	case EventOrderCancelled:
		var d orderCancelledData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("order.cancelled data: %w", err)
		}
		return svc.OrderCancelled(ctx, d.OrderID, ev.UserID)
	default:
		return nil // another order event billing does not act on
	}
}
