// Package events is the contract of the events one service publishes and
// another consumes (docs/conventions.md "Events"): the type names and the
// data each type carries, written once for the publisher and its
// consumers. The envelope around the data is natsauth.Envelope.
package events

import "go.opentelemetry.io/otel/attribute"

// Span attributes naming the order and the invoice a request or an event
// acts on (natsauth.RecordID): make trace ORDER=<id> finds an order's trace
// by AttrOrderID. Both ids are random, no personal data.
const (
	AttrOrderID   = attribute.Key("order.id")
	AttrInvoiceID = attribute.Key("invoice.id")
)

// Order events, on ORDERS_EVENTS: orders publishes them, billing consumes
// them.
const (
	OrderCreated   = "order.created"
	OrderCancelled = "order.cancelled"
)

// Invoice events, on BILLING_EVENTS: billing publishes them, orders consumes
// them.
const (
	InvoicePaid     = "invoice.paid"
	InvoiceRefunded = "invoice.refunded"
)

// OrderCreatedData is the data of order.created. OrgID lets a consumer know
// the order's organization when the orders service signs on the customer's
// behalf (its relay): its own token names no organization of the
// customer's.
type OrderCreatedData struct {
	OrderID    string      `json:"order_id"`
	OrgID      string      `json:"org_id,omitempty"`
	TotalCents int64       `json:"total_cents"`
	Currency   string      `json:"currency"`
	Items      []OrderLine `json:"items"`
}

// OrderLine is one line of an order.created.
type OrderLine struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	LineTotalCents int64  `json:"line_total_cents"`
}

// OrderCancelledData is the data of order.cancelled; OrgID as in
// OrderCreatedData.
type OrderCancelledData struct {
	OrderID string `json:"order_id"`
	OrgID   string `json:"org_id,omitempty"`
	Reason  string `json:"reason"`
}

// InvoiceData is the data of invoice.paid and invoice.refunded.
type InvoiceData struct {
	InvoiceID   string `json:"invoice_id"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
}
