// Package domain holds the orders service's entities and rules. It does no I/O.
package domain

import (
	"fmt"
	"time"
)

// Status of an order.
type Status string

// Order statuses: pending → paid | cancelled; paid → refunded.
const (
	StatusPending   Status = "pending"
	StatusPaid      Status = "paid"
	StatusCancelled Status = "cancelled"
	StatusRefunded  Status = "refunded"
)

// Line and quantity limits.
const (
	MinLines    = 1
	MaxLines    = 50
	MinQuantity = 1
	MaxQuantity = 100
)

// Address is where an order ships to, as the users service knows it.
type Address struct {
	Line1      string
	City       string
	PostalCode string
	Country    string
}

// LineRequest is what a client asks for: a SKU and a quantity, never a price.
type LineRequest struct {
	SKU      string
	Quantity int
}

// Line is a priced order line.
type Line struct {
	SKU            string
	Quantity       int
	UnitPriceCents int64
	LineTotalCents int64
}

// Order is a user's order.
type Order struct {
	ID     string
	UserID string
	// OrgID is the Auth0 Organization the order was placed under (the
	// org_id of the caller's token), "" for none. Together with UserID it
	// says who owns the order: the same user in another organization, or in
	// none, is someone else (docs/contract.md §8).
	OrgID           string
	Status          Status
	Items           []Line
	TotalCents      int64
	Currency        string
	ShippingAddress *Address
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// ValidateLines checks requested lines against the rules and the catalog and
// prices them. Every problem is reported, keyed by field.
func ValidateLines(req []LineRequest, cat *Catalog) ([]Line, int64, error) {
	verr := &ValidationError{}
	switch {
	case len(req) < MinLines:
		verr.Add("items", fmt.Sprintf("must contain at least %d line", MinLines))
	case len(req) > MaxLines:
		verr.Add("items", fmt.Sprintf("must contain at most %d lines", MaxLines))
	}
	lines := make([]Line, 0, len(req))
	var total int64
	for i, r := range req {
		p, known := cat.Lookup(r.SKU)
		switch {
		case r.SKU == "":
			verr.Add(fmt.Sprintf("items[%d].sku", i), "is required")
		case !known:
			verr.Add(fmt.Sprintf("items[%d].sku", i), fmt.Sprintf("unknown sku %q", r.SKU))
		}
		if r.Quantity < MinQuantity || r.Quantity > MaxQuantity {
			verr.Add(fmt.Sprintf("items[%d].quantity", i), fmt.Sprintf("must be between %d and %d", MinQuantity, MaxQuantity))
		}
		if !known {
			continue
		}
		lt := p.UnitPriceCents * int64(r.Quantity)
		lines = append(lines, Line{SKU: p.SKU, Quantity: r.Quantity, UnitPriceCents: p.UnitPriceCents, LineTotalCents: lt})
		total += lt
	}
	if len(verr.Fields) > 0 {
		return nil, 0, verr
	}
	return lines, total, nil
}

// NewOrder validates and prices the requested lines and returns a pending order.
func NewOrder(id, userID string, req []LineRequest, cat *Catalog, ship *Address, now time.Time) (Order, error) {
	if id == "" || userID == "" {
		return Order{}, fmt.Errorf("new order: id and user are required")
	}
	lines, total, err := ValidateLines(req, cat)
	if err != nil {
		return Order{}, err
	}
	now = now.UTC()
	return Order{
		ID: id, UserID: userID, Status: StatusPending,
		Items: lines, TotalCents: total, Currency: Currency,
		ShippingAddress: ship, CreatedAt: now, UpdatedAt: now,
	}, nil
}

// transitions lists the allowed moves.
var transitions = map[Status][]Status{
	StatusPending: {StatusPaid, StatusCancelled},
	StatusPaid:    {StatusRefunded},
}

// Transition moves the order to next. It reports changed=false without error
// when the order is already in next, so that redelivered events are no-ops,
// and ErrConflict when the move is not allowed.
func (o *Order) Transition(next Status, now time.Time) (changed bool, err error) {
	if o.Status == next {
		return false, nil
	}
	for _, s := range transitions[o.Status] {
		if s == next {
			o.Status = next
			o.UpdatedAt = now.UTC()
			return true, nil
		}
	}
	return false, fmt.Errorf("order %s is %s, cannot become %s: %w", o.ID, o.Status, next, ErrConflict)
}
