package ports

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/billing/internal/app"
)

// ORDERS_EVENTS, which billing reads through the durable the orders
// service provisions for it (pkg/platform/mesh), and where its dead letters go.
const (
	OrdersStream  = "ORDERS_EVENTS"
	OrdersDurable = "billing-orders"
	DLQPrefix     = "dlq.billing"
)

// eventOrg is the organization an order event is about. Signed by the
// customer, it is the one their transaction token carries (the Transaction
// Token Service copied it from the token the order was placed with), and
// the data cannot say otherwise (a relayed event carries the token sealed
// at the customer's request). Signed by the orders service on the
// customer's behalf (a block's cascade; OrdersOnBehalfPolicy admitted it),
// its own token names no organization of the customer's, and the data's
// org_id is the order's, written by the service trusted to act for any
// customer.
func eventOrg(ev *natsauth.Event, dataOrg string) string {
	if ev.Claims.IsM2M() {
		return dataOrg
	}
	return ev.Claims.OrgID
}

// NewOrdersConsumer returns the durable consumer of ORDERS_EVENTS. The
// stream carries users' tokens (the customer who ordered or cancelled) and
// the orders service's own (client ordersClient), no other client's (see
// OrdersPolicy). Events on another user's behalf (the orders service
// cancelling a blocked user's orders) need an M2M token of the orders
// service with cancel:orders (see OrdersOnBehalfPolicy).
//
// The orders service provisions the durable (its filter and delivery
// settings are in pkg/platform/mesh); billing only binds to it through js,
// the orders account's JetStream API as billing's account imports it.
func NewOrdersConsumer(js jetstream.JetStream, v natsauth.Verifier, m *natsauth.Metrics, svc *app.Service, ordersClient string, log *slog.Logger) (*natsauth.Consumer, error) {
	cfg, err := mesh.Bind(mesh.Billing, natsauth.ConsumerConfig{
		Stream:           OrdersStream,
		Durable:          OrdersDurable,
		DeadLetterPrefix: DLQPrefix,
		Policy:           OrdersPolicy(ordersClient),
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

// OrdersPolicy is what every order event's token must be: a user's, or the
// orders service's own.
func OrdersPolicy(ordersClient string) authz.Policy {
	return authz.Authenticated().Users().Clients(ordersClient)
}

// OrdersOnBehalfPolicy is what an order event about another user than its
// signer needs (see NewOrdersConsumer). It admits the orders service's
// client only, no user: every customer holds cancel:orders, so admitting
// users would let any customer's token pass as "acting on another user's
// data", and no user, not even an admin, cancels or creates someone else's
// order through orders (its cancel is owner-only).
func OrdersOnBehalfPolicy(ordersClient string) authz.Policy {
	return authz.RequireAll("cancel:orders").Clients(ordersClient)
}

func handleOrderEvent(ctx context.Context, svc *app.Service, ev *natsauth.Event) error {
	switch ev.Type {
	case events.OrderCreated:
		var d events.OrderCreatedData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("order.created data: %w", err)
		}
		natsauth.RecordID(ctx, events.AttrOrderID, d.OrderID)
		return svc.OpenInvoice(ctx, app.OrderCreated{OrderID: d.OrderID, UserID: ev.UserID, OrgID: eventOrg(ev, d.OrgID),
			AmountCents: d.TotalCents, Currency: d.Currency})
	case events.OrderCancelled:
		var d events.OrderCancelledData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("order.cancelled data: %w", err)
		}
		natsauth.RecordID(ctx, events.AttrOrderID, d.OrderID)
		return svc.OrderCancelled(ctx, d.OrderID, ev.UserID, eventOrg(ev, d.OrgID))
	default:
		return nil // another order event billing does not act on
	}
}
