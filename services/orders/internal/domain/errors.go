package domain

import (
	"errors"

	"github.com/authmesh/authmesh/pkg/platform/fault"
)

// Sentinel errors of the orders domain: fault's kinds, and one of orders'
// own. Adapters wrap them with %w; the HTTP error handler maps them to
// status codes.
var (
	// ErrNotFound: no such order, or one the caller may not see (ownership is
	// reported as absence so that ids cannot be probed).
	ErrNotFound = fault.ErrNotFound
	// ErrConflict: the state does not allow the change (or a concurrent change won).
	ErrConflict = fault.ErrConflict
	// ErrValidation: the request breaks a rule; see *ValidationError.
	ErrValidation = fault.ErrInvalid
	// ErrForbidden: the caller lacks a permission the request needs beyond its
	// route policy (e.g. reading another user's orders).
	ErrForbidden = fault.ErrForbidden
	// ErrUnavailable: a dependency (users, billing, NATS) could not answer.
	ErrUnavailable = fault.ErrUnavailable
	// ErrIdempotencyMismatch: an Idempotency-Key was reused with a different
	// body. It is not an ErrConflict: the caller's request, not the order's
	// state, is at fault.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
)

// ValidationError lists field-level problems, keyed by a JSON-path-like field
// name ("items[0].sku"); it matches ErrValidation.
type ValidationError = fault.ValidationError
