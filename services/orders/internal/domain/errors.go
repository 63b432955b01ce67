package domain

import (
	"errors"
	"sort"
	"strings"
)

// Sentinel errors of the orders domain. Adapters wrap them with %w; the HTTP
// error handler maps them to status codes.
var (
	// ErrNotFound: no such order, or one the caller may not see (ownership is
	// reported as absence so that ids cannot be probed).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the state does not allow the change (or a concurrent change won).
	ErrConflict = errors.New("conflict")
	// ErrValidation: the request breaks a rule; see *ValidationError.
	ErrValidation = errors.New("validation failed")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused with a different body.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrForbidden: the caller lacks a permission the request needs beyond its
	// route policy (e.g. reading another user's orders).
	ErrForbidden = errors.New("forbidden")
	// ErrUnavailable: a dependency (users, billing, NATS) could not answer.
	ErrUnavailable = errors.New("dependency unavailable")
)

// ValidationError lists field-level problems, keyed by a JSON-path-like field
// name ("items[0].sku").
type ValidationError struct {
	Fields map[string]string
}

func (e *ValidationError) Error() string {
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+e.Fields[k])
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrValidation) match.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

func (e *ValidationError) add(field, msg string) {
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	if _, ok := e.Fields[field]; !ok {
		e.Fields[field] = msg
	}
}
