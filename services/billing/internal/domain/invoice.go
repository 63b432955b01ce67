// Package domain holds billing's entities and rules: an invoice per order and
// the transitions open → paid → refunded and open → void.
package domain

import (
	"fmt"
	"regexp"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/fault"
)

// Sentinel errors, each of one of fault's kinds; adapters wrap them with %w,
// the HTTP error handler maps them.
var (
	// ErrNotFound: no such invoice, or one the caller may not see.
	ErrNotFound = fault.New(fault.ErrNotFound, "invoice not found")
	// ErrConflict: the invoice's status does not allow the transition, or a
	// concurrent change won.
	ErrConflict = fault.New(fault.ErrConflict, "invoice status does not allow this")
	// ErrInvalid: input that breaks a rule (a malformed id, a negative amount).
	ErrInvalid = fault.New(fault.ErrInvalid, "invalid invoice data")
)

// Status of an invoice.
type Status string

// Statuses (contract §4).
const (
	StatusOpen     Status = "open"
	StatusPaid     Status = "paid"
	StatusVoid     Status = "void"
	StatusRefunded Status = "refunded"
)

// Invoice bills one order. Its ID is derived from the order's, so "one
// invoice per order" is a property of the key, not of a check that can race.
type Invoice struct {
	ID      string
	OrderID string
	UserID  string
	// OrgID is the Auth0 Organization its order was placed under ("" none):
	// the invoice inherits it from the order's event, and with UserID it
	// says who owns the invoice (docs/contract.md §8).
	OrgID       string
	Status      Status
	AmountCents int64
	Currency    string
	CreatedAt   time.Time
	PaidAt      time.Time // zero until paid
	// Billed is false for an invoice voided before the order's created event
	// arrived: it holds no amount yet, and the late event fills it in
	// without reopening it.
	Billed bool
}

const invoicePrefix = "inv_"

// orderIDPattern keeps ids usable as KV keys and NATS tokens.
var orderIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidOrderID reports whether id can name an order.
func ValidOrderID(id string) bool { return orderIDPattern.MatchString(id) }

// InvoiceID is the id of the invoice of order orderID.
func InvoiceID(orderID string) string { return invoicePrefix + orderID }

// OrderIDOf returns the order an invoice id belongs to.
func OrderIDOf(invoiceID string) (string, error) {
	if len(invoiceID) <= len(invoicePrefix) || invoiceID[:len(invoicePrefix)] != invoicePrefix {
		return "", fmt.Errorf("%w: invoice id %q", ErrNotFound, invoiceID)
	}
	id := invoiceID[len(invoicePrefix):]
	if !ValidOrderID(id) {
		return "", fmt.Errorf("%w: invoice id %q", ErrNotFound, invoiceID)
	}
	return id, nil
}

// NewInvoice opens the invoice of an order.
func NewInvoice(orderID, userID string, amountCents int64, currency string, now time.Time) (*Invoice, error) {
	if err := checkBilling(orderID, userID, amountCents, currency); err != nil {
		return nil, err
	}
	return &Invoice{
		ID: InvoiceID(orderID), OrderID: orderID, UserID: userID, Status: StatusOpen,
		AmountCents: amountCents, Currency: currency, CreatedAt: now.UTC(), Billed: true,
	}, nil
}

// NewVoidInvoice records the invoice of an order cancelled before its
// created event arrived: void from birth, so a late created event cannot open it.
func NewVoidInvoice(orderID, userID string, now time.Time) (*Invoice, error) {
	if !ValidOrderID(orderID) {
		return nil, fmt.Errorf("%w: order id %q", ErrInvalid, orderID)
	}
	return &Invoice{ID: InvoiceID(orderID), OrderID: orderID, UserID: userID, Status: StatusVoid, CreatedAt: now.UTC()}, nil
}

func checkBilling(orderID, userID string, amountCents int64, currency string) error {
	switch {
	case !ValidOrderID(orderID):
		return fmt.Errorf("%w: order id %q", ErrInvalid, orderID)
	case userID == "":
		return fmt.Errorf("%w: no user", ErrInvalid)
	case amountCents < 0:
		return fmt.Errorf("%w: negative amount", ErrInvalid)
	case len(currency) != 3:
		return fmt.Errorf("%w: currency %q", ErrInvalid, currency)
	}
	return nil
}

// FillIn completes an unbilled (void-from-birth) invoice with the order's
// figures; its status stays. It reports whether anything changed.
func (i *Invoice) FillIn(userID string, amountCents int64, currency string) (bool, error) {
	if i.Billed {
		return false, nil
	}
	if err := checkBilling(i.OrderID, userID, amountCents, currency); err != nil {
		return false, err
	}
	i.UserID, i.AmountCents, i.Currency, i.Billed = userID, amountCents, currency, true
	return true, nil
}

// Pay moves open → paid.
func (i *Invoice) Pay(now time.Time) error {
	if i.Status != StatusOpen {
		return fmt.Errorf("%w: cannot pay a %s invoice", ErrConflict, i.Status)
	}
	i.Status, i.PaidAt = StatusPaid, now.UTC()
	return nil
}

// Refund moves paid → refunded.
func (i *Invoice) Refund() error {
	if i.Status != StatusPaid {
		return fmt.Errorf("%w: cannot refund a %s invoice", ErrConflict, i.Status)
	}
	i.Status = StatusRefunded
	return nil
}

// Void moves open → void. Voiding a void invoice changes nothing (cancel is
// retried); a paid or refunded one is a conflict: the payment won.
func (i *Invoice) Void() (changed bool, err error) {
	switch i.Status {
	case StatusOpen:
		i.Status = StatusVoid
		return true, nil
	case StatusVoid:
		return false, nil
	default:
		return false, fmt.Errorf("%w: the invoice is already %s", ErrConflict, i.Status)
	}
}
