// Package fault is the one base of every service's domain errors: the kinds
// of failure (not found, conflict, invalid, forbidden, unavailable) and the
// field-level validation error. A domain names its sentinels with its own
// words (New), so its messages stay its own, while errors.Is(err,
// fault.ErrNotFound) holds for any service's "not found". Like cas, it imports
// nothing of ours, so domain packages can use it.
package fault

import (
	"errors"
	"maps"
	"slices"
	"strings"
)

// The kinds of failure. A domain sentinel made with New matches its kind
// with errors.Is; so does a *ValidationError match ErrInvalid.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrInvalid     = errors.New("validation failed")
	ErrForbidden   = errors.New("forbidden")
	ErrUnavailable = errors.New("dependency unavailable")
)

// sentinel is a domain's error of one kind.
type sentinel struct {
	kind error
	msg  string
}

func (s *sentinel) Error() string { return s.msg }

// Is makes errors.Is(err, kind) true.
func (s *sentinel) Is(target error) bool { return target == s.kind }

// New returns a sentinel error with message msg that is of kind: it is
// itself (errors.Is compares it by identity) and it matches kind.
//
//	var ErrNotFound = fault.New(fault.ErrNotFound, "invoice not found")
func New(kind error, msg string) error { return &sentinel{kind: kind, msg: msg} }

// ValidationError lists field-level problems, keyed by the field's path in
// the request's JSON ("items[0].sku"). It matches ErrInvalid.
type ValidationError struct {
	Fields map[string]string
}

func (e *ValidationError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Fields))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+e.Fields[k])
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Add records msg for field unless the field already has a problem (the
// first one found is the one reported).
func (e *ValidationError) Add(field, msg string) {
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	if _, ok := e.Fields[field]; !ok {
		e.Fields[field] = msg
	}
}
