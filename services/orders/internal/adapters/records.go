package adapters

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"time"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Storage shapes, kept apart from the domain so the domain carries no tags.

type addressRecord struct {
	Line1      string `json:"line1"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
}

type lineRecord struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	LineTotalCents int64  `json:"line_total_cents"`
}

type orderRecord struct {
	ID              string         `json:"id"`
	UserID          string         `json:"user_id"`
	OrgID           string         `json:"org_id,omitempty"`
	Status          string         `json:"status"`
	Items           []lineRecord   `json:"items"`
	TotalCents      int64          `json:"total_cents"`
	Currency        string         `json:"currency"`
	ShippingAddress *addressRecord `json:"shipping_address"`
	CreatedAt       time.Time      `json:"created_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
}

type pendingRecord struct {
	EventID    string    `json:"event_id"`
	Type       string    `json:"type"`
	OrderID    string    `json:"order_id"`
	UserID     string    `json:"user_id"`
	Reason     string    `json:"reason,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
	// The event's message with the token bound to it (natsauth.SealedEvent);
	// absent for a cancel intent.
	Sealed    json.RawMessage `json:"sealed,omitempty"`
	PublishBy time.Time       `json:"publish_by,omitzero"`
}

type idemRecord struct {
	RequestHash string    `json:"request_hash"`
	OrderID     string    `json:"order_id"`
	CreatedAt   time.Time `json:"created_at"`
}

func toLineRecords(ls []domain.Line) []lineRecord {
	out := make([]lineRecord, len(ls))
	for i, l := range ls {
		out[i] = lineRecord{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.LineTotalCents}
	}
	return out
}

func toRecord(o domain.Order) orderRecord {
	r := orderRecord{
		ID: o.ID, UserID: o.UserID, OrgID: o.OrgID, Status: string(o.Status), Items: toLineRecords(o.Items),
		TotalCents: o.TotalCents, Currency: o.Currency, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
	if a := o.ShippingAddress; a != nil {
		r.ShippingAddress = &addressRecord{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	return r
}

func (r orderRecord) toDomain() domain.Order {
	o := domain.Order{
		ID: r.ID, UserID: r.UserID, OrgID: r.OrgID, Status: domain.Status(r.Status), TotalCents: r.TotalCents,
		Currency: r.Currency, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		Items: make([]domain.Line, len(r.Items)),
	}
	for i, l := range r.Items {
		o.Items[i] = domain.Line{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.LineTotalCents}
	}
	if a := r.ShippingAddress; a != nil {
		o.ShippingAddress = &domain.Address{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	return o
}

func sortOrders(os []domain.Order) {
	sort.SliceStable(os, func(i, j int) bool {
		if !os[i].CreatedAt.Equal(os[j].CreatedAt) {
			return os[i].CreatedAt.Before(os[j].CreatedAt)
		}
		return os[i].ID < os[j].ID
	})
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
