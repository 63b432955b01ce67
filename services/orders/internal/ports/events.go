package ports

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Streams, durables and event types this service consumes (docs/conventions.md).
const (
	BillingStream  = "BILLING_EVENTS"
	BillingDurable = "orders-billing"
	UsersStream    = "USERS_EVENTS"
	UsersDurable   = "orders-users"
	DLQPrefix      = "dlq.orders"

	EventInvoicePaid     = events.InvoicePaid
	EventInvoiceRefunded = events.InvoiceRefunded
	EventUserBlocked     = "user.blocked"
)

// BillingConsumerConfig is the orders-billing consumer. BILLING_EVENTS
// carries users' tokens (the payer, the admin who refunded), each sealed with
// its event, and billing's own (client billingClient), which seals again an
// invoice.refunded whose sealed token ran out in its outbox; no other
// client's. billing.events.invoice.paid accepts pay:invoices only
// (mesh.Hops), which billing's own token lacks. An event about another user's invoice needs
// refund:invoices, from a user or from billing's client: an admin's refund of
// alice's invoice is published under the admin's own token and is exactly
// the legitimate case; refund:invoices is an admin-only permission, so no
// customer passes.
func BillingConsumerConfig(billingClient string, m *natsauth.Metrics, log *slog.Logger) natsauth.ConsumerConfig {
	return natsauth.ConsumerConfig{
		Stream: BillingStream, Durable: BillingDurable, DeadLetterPrefix: DLQPrefix,
		Policy:         authz.Authenticated().Users().Clients(billingClient),
		OnBehalfPolicy: authz.RequireAll("refund:invoices").Users().Clients(billingClient),
		// Events of one invoice stay in order; different orders overlap.
		Workers: 8,
		Metrics: m,
		Logger:  log,
	}
}

// UsersConsumerConfig is the orders-users consumer. USERS_EVENTS carries
// the admins' tokens and the users service's own (client usersClient), which
// finishes a block a failed request left half done. Blocking is always done
// to someone else: it needs block:users, from a user (the users service
// publishes user.blocked under the admin's token that asked for the block;
// block:users is admin-only, so no customer's token passes) or from
// usersClient.
func UsersConsumerConfig(usersClient string, m *natsauth.Metrics, log *slog.Logger) natsauth.ConsumerConfig {
	return natsauth.ConsumerConfig{
		Stream: UsersStream, Durable: UsersDurable, DeadLetterPrefix: DLQPrefix,
		Policy:         authz.Authenticated().Users().Clients(usersClient),
		OnBehalfPolicy: authz.RequireAll("block:users").Users().Clients(usersClient),
		Metrics:        m,
		Logger:         log,
	}
}

type userBlockedData struct {
	UserID string `json:"user_id"`
}

// BillingHandler applies invoice.paid and invoice.refunded to orders. Both are
// idempotent: a redelivered event finds the order already moved.
func BillingHandler(svc *app.Service, log *slog.Logger) natsauth.EventHandler {
	return func(ctx context.Context, ev *natsauth.Event) error {
		var next domain.Status
		switch ev.Type {
		case EventInvoicePaid:
			next = domain.StatusPaid
		case EventInvoiceRefunded:
			next = domain.StatusRefunded
		default:
			log.DebugContext(ctx, "event ignored", "type", ev.Type, "id", ev.ID)
			return nil
		}
		var d events.InvoiceData
		if err := json.Unmarshal(ev.Data, &d); err != nil || d.OrderID == "" {
			return fmt.Errorf("%s %s: data without order_id", ev.Type, ev.ID)
		}
		natsauth.RecordID(ctx, events.AttrOrderID, d.OrderID)
		natsauth.RecordID(ctx, events.AttrInvoiceID, d.InvoiceID)
		return svc.ApplyInvoiceStatus(ctx, d.OrderID, ev.UserID, next)
	}
}

// UsersHandler cancels a blocked user's pending orders (with the service's
// own identity; see app.Service.CancelPendingForUser).
func UsersHandler(svc *app.Service, log *slog.Logger) natsauth.EventHandler {
	return func(ctx context.Context, ev *natsauth.Event) error {
		if ev.Type != EventUserBlocked {
			log.DebugContext(ctx, "event ignored", "type", ev.Type, "id", ev.ID)
			return nil
		}
		var d userBlockedData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("%s %s: bad data: %w", ev.Type, ev.ID, err)
		}
		if d.UserID != "" && d.UserID != ev.UserID {
			return fmt.Errorf("%s %s: data.user_id is not the envelope's user_id", ev.Type, ev.ID)
		}
		n, err := svc.CancelPendingForUser(ctx, ev.UserID)
		if n > 0 {
			log.InfoContext(ctx, "blocked user's pending orders cancelled", "count", n, "user", platform.SubjectHash(ev.UserID))
		}
		return err
	}
}
