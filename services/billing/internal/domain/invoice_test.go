package domain

import (
	"errors"
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name    string
		from    Status
		act     func(*Invoice) error
		want    Status
		wantErr error
	}{
		{"pay open", StatusOpen, func(i *Invoice) error { return i.Pay(now) }, StatusPaid, nil},
		{"pay paid", StatusPaid, func(i *Invoice) error { return i.Pay(now) }, StatusPaid, ErrConflict},
		{"pay void", StatusVoid, func(i *Invoice) error { return i.Pay(now) }, StatusVoid, ErrConflict},
		{"refund paid", StatusPaid, func(i *Invoice) error { return i.Refund() }, StatusRefunded, nil},
		{"refund open", StatusOpen, func(i *Invoice) error { return i.Refund() }, StatusOpen, ErrConflict},
		{"refund refunded", StatusRefunded, func(i *Invoice) error { return i.Refund() }, StatusRefunded, ErrConflict},
		{"void open", StatusOpen, func(i *Invoice) error { _, err := i.Void(); return err }, StatusVoid, nil},
		{"void void", StatusVoid, func(i *Invoice) error { _, err := i.Void(); return err }, StatusVoid, nil},
		{"void paid", StatusPaid, func(i *Invoice) error { _, err := i.Void(); return err }, StatusPaid, ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inv := &Invoice{Status: tt.from}
			err := tt.act(inv)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if inv.Status != tt.want {
				t.Fatalf("status %s, want %s", inv.Status, tt.want)
			}
		})
	}
}

func TestIDsAndFillIn(t *testing.T) {
	t.Parallel()
	if _, err := OrderIDOf("inv_"); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty order id accepted")
	}
	if _, err := OrderIDOf("inv_a.b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dot accepted (KV wildcard risk)")
	}
	if id, err := OrderIDOf(InvoiceID("o-1")); err != nil || id != "o-1" {
		t.Errorf("round trip = %q, %v", id, err)
	}
	if _, err := NewInvoice("o1", "u", -1, "EUR", time.Now()); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative amount accepted")
	}
	v, _ := NewVoidInvoice("o1", "", time.Now())
	if changed, err := v.FillIn("auth0|a", 900, "EUR"); !changed || err != nil || v.Status != StatusVoid || v.AmountCents != 900 {
		t.Errorf("fill in = %v %v %+v", changed, err, v)
	}
	if changed, _ := v.FillIn("auth0|a", 1, "EUR"); changed {
		t.Errorf("billed invoice filled twice")
	}
}
