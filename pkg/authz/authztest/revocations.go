package authztest

import (
	"sync"
	"time"
)

// Revocations is an in-memory authz.RevocationChecker, safe for concurrent
// use; the zero value has no subject revoked.
type Revocations struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// Revoke records that sub's tokens issued before at are revoked.
func (r *Revocations) Revoke(sub string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]time.Time{}
	}
	r.m[sub] = at
}

// RevokedAt reports when sub was revoked, if it was.
func (r *Revocations) RevokedAt(sub string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.m[sub]
	return at, ok
}
