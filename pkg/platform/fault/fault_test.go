package fault

import (
	"errors"
	"fmt"
	"testing"
)

// Two domains' sentinels of one kind: each matches itself (wrapped too) and
// the kind, never the other domain's sentinel or another kind.
func TestSentinelsMatchThemselvesAndTheirKind(t *testing.T) {
	orderGone, invoiceGone := New(ErrNotFound, "no such order"), New(ErrNotFound, "no such invoice")
	invalid := &ValidationError{Fields: map[string]string{"a": "x"}}
	for _, tc := range []struct {
		name      string
		err       error
		is, isNot []error
	}{
		{"sentinel", fmt.Errorf("get order 1: %w", orderGone), []error{orderGone, ErrNotFound}, []error{invoiceGone, ErrConflict, ErrInvalid}},
		{"other domain's", invoiceGone, []error{invoiceGone, ErrNotFound}, []error{orderGone, ErrUnavailable}},
		{"validation", fmt.Errorf("place: %w", invalid), []error{ErrInvalid}, []error{ErrNotFound, ErrConflict, ErrForbidden}},
	} {
		for _, target := range tc.is {
			if !errors.Is(tc.err, target) {
				t.Errorf("%s: errors.Is(%v, %v) = false", tc.name, tc.err, target)
			}
		}
		for _, target := range tc.isNot {
			if errors.Is(tc.err, target) {
				t.Errorf("%s: errors.Is(%v, %v) = true", tc.name, tc.err, target)
			}
		}
	}
	if orderGone.Error() != "no such order" {
		t.Fatalf("message %q, want the domain's own", orderGone.Error())
	}
}

func TestValidationErrorKeepsTheFirstProblemOfAField(t *testing.T) {
	e := &ValidationError{}
	e.Add("b", "y")
	e.Add("a", "x")
	e.Add("a", "later")
	if got, want := e.Error(), "validation failed: a: x; b: y"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
