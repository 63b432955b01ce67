package domain

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateLines(t *testing.T) {
	t.Parallel()
	cat := SeedCatalog()
	many := make([]LineRequest, 51)
	for i := range many {
		many[i] = LineRequest{SKU: "mug", Quantity: 1}
	}
	tests := []struct {
		name      string
		req       []LineRequest
		wantTotal int64
		wantField string // "" = valid
	}{
		{"one line", []LineRequest{{SKU: "mug", Quantity: 2}}, 2400, ""},
		{"mixed", []LineRequest{{SKU: "tea-green", Quantity: 1}, {SKU: "kettle", Quantity: 1}, {SKU: "tea-black", Quantity: 100}}, 450 + 4500 + 39000, ""},
		{"fifty lines", many[:50], 50 * 1200, ""},
		{"no lines", nil, 0, "items"},
		{"fifty-one lines", many, 0, "items"},
		{"unknown sku", []LineRequest{{SKU: "spoon", Quantity: 1}}, 0, "items[0].sku"},
		{"empty sku", []LineRequest{{SKU: "", Quantity: 1}}, 0, "items[0].sku"},
		{"quantity zero", []LineRequest{{SKU: "mug", Quantity: 0}}, 0, "items[0].quantity"},
		{"quantity 101", []LineRequest{{SKU: "mug", Quantity: 1}, {SKU: "mug", Quantity: 101}}, 0, "items[1].quantity"},
		{"negative", []LineRequest{{SKU: "mug", Quantity: -1}}, 0, "items[0].quantity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lines, total, err := ValidateLines(tc.req, cat)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if total != tc.wantTotal || len(lines) != len(tc.req) {
					t.Fatalf("total=%d lines=%d, want %d and %d", total, len(lines), tc.wantTotal, len(tc.req))
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || !errors.Is(err, ErrValidation) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			if _, ok := verr.Fields[tc.wantField]; !ok {
				t.Fatalf("fields %v lack %q", verr.Fields, tc.wantField)
			}
		})
	}
}

func TestLinePrices(t *testing.T) {
	t.Parallel()
	o, err := NewOrder("id", "u", []LineRequest{{SKU: "mug", Quantity: 3}}, SeedCatalog(), nil, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if l := o.Items[0]; l.UnitPriceCents != 1200 || l.LineTotalCents != 3600 || o.TotalCents != 3600 || o.Currency != "EUR" || o.Status != StatusPending {
		t.Fatalf("bad order %+v", o)
	}
}

func TestTransition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		from, to    Status
		wantChanged bool
		wantErr     bool
	}{
		{StatusPending, StatusPaid, true, false},
		{StatusPending, StatusCancelled, true, false},
		{StatusPaid, StatusRefunded, true, false},
		{StatusPaid, StatusPaid, false, false},
		{StatusCancelled, StatusCancelled, false, false},
		{StatusPending, StatusRefunded, false, true},
		{StatusPaid, StatusCancelled, false, true},
		{StatusCancelled, StatusPaid, false, true},
		{StatusRefunded, StatusPaid, false, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.from)+"->"+string(tc.to), func(t *testing.T) {
			t.Parallel()
			o := Order{ID: "x", Status: tc.from}
			changed, err := o.Transition(tc.to, time.Now())
			if changed != tc.wantChanged || (err != nil) != tc.wantErr {
				t.Fatalf("changed=%v err=%v", changed, err)
			}
			if tc.wantErr && (!errors.Is(err, ErrConflict) || o.Status != tc.from) {
				t.Fatalf("want ErrConflict and unchanged status, got %v %s", err, o.Status)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	t.Parallel()
	e := &ValidationError{Fields: map[string]string{"b": "y", "a": "x"}}
	if got := e.Error(); !strings.Contains(got, "a: x; b: y") {
		t.Fatalf("unsorted message %q", got)
	}
}
