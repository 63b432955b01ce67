package authz

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults of the key provider.
const (
	DefaultKeyTTL          = 10 * time.Minute
	DefaultRefetchCooldown = 30 * time.Second
	DefaultMaxStale        = 24 * time.Hour
	DefaultRetainRotated   = 7 * 24 * time.Hour
	DefaultHTTPTimeout     = 5 * time.Second

	// maxJWKSBytes bounds what we read from the identity provider: a JWKS of a
	// handful of RSA keys with certificates is a few kilobytes.
	maxJWKSBytes = 1 << 20
	// minRSABits refuses keys too weak to trust even if the endpoint serves them.
	minRSABits = 2048
)

// KeyProvider fetches, caches and refreshes an issuer's signing keys: RS256
// keys of the Auth0 tenant by default, or ES256 keys (WithAlgorithm) such as
// the Transaction Token Service's.
//
// Reads are lock-free (an atomically swapped snapshot). A fetch happens at
// start, in the background before the TTL runs out, and when a token names an
// unknown kid — the latter at most once per cool-down and single-flight, so a
// flood of bogus kids costs at most one request to the identity provider per
// cool-down. When fetches fail, the last good keys keep serving until they are
// older than max-stale; keys that leave the JWKS are retained (for
// TxnValidator.ValidateAt only) for the retention window.
type KeyProvider struct {
	o keyOptions

	snap atomic.Pointer[keySnapshot]
	sf   singleflight.Group

	mu sync.Mutex // guards the fields below
	// lastAttempt is the last fetch not on the schedule (unknown kid, cold
	// start, stale keys): the cool-down is measured from it, so the scheduled
	// refreshes never delay picking up a freshly rotated key.
	lastAttempt time.Time
	lastErr     error
	jwksURL     string // explicit, or found through discovery
}

type keySnapshot struct {
	keys      map[string]any        // the current JWKS (*rsa.PublicKey or *ecdsa.PublicKey)
	retired   map[string]retiredKey // kids that left the JWKS, with when
	fetchedAt time.Time             // last successful fetch
}

type retiredKey struct {
	key     any
	removed time.Time
}

// install swaps in a new snapshot, moving keys that left the JWKS to the
// retired set. Called with p.mu held, so snapshots are built one at a time.
func (p *KeyProvider) install(keys map[string]any, now time.Time) {
	old := p.snap.Load()
	retired := make(map[string]retiredKey)
	if old != nil && p.o.retain > 0 {
		for kid, r := range old.retired {
			if now.Sub(r.removed) <= p.o.retain {
				retired[kid] = r
			}
		}
		for kid, k := range old.keys {
			if _, still := keys[kid]; !still {
				retired[kid] = retiredKey{key: k, removed: now}
			}
		}
	}
	for kid := range keys {
		delete(retired, kid)
	}
	p.snap.Store(&keySnapshot{keys: keys, retired: retired, fetchedAt: now})
}

var (
	errUnknownKID = invalid("unknown_kid", "the token was signed by an unknown key", nil)
)

func keysUnavailable(cause error) *Error {
	return &Error{Code: CodeKeysUnavailable, Reason: "keys_unavailable", Description: "signing keys are unavailable", Err: cause}
}

// key returns the current key for kid, fetching the JWKS when the kid is
// unknown (rate-limited) or nothing is loaded yet.
func (p *KeyProvider) key(ctx context.Context, kid string) (any, error) {
	return p.lookup(ctx, kid, time.Time{})
}

// lookup finds kid among the current keys or, when at is not zero (a
// message stored at that time: TxnValidator.ValidateAt), also among keys retired within the retention window.
func (p *KeyProvider) lookup(ctx context.Context, kid string, at time.Time) (any, error) {
	for attempt := 0; ; attempt++ {
		s := p.snap.Load()
		now := p.o.now()
		if s != nil {
			age := now.Sub(s.fetchedAt)
			if age <= p.o.maxStale {
				if age > p.o.ttl {
					p.refreshAsync()
				}
				if k, ok := s.keys[kid]; ok {
					recordKeyLookup(ctx, kid, attempt == 0)
					return k, nil
				}
				if !at.IsZero() {
					// A key leaves an Auth0 JWKS only when it is revoked: it
					// verifies messages stored before that, never after.
					if r, ok := s.retired[kid]; ok && now.Sub(r.removed) <= p.o.retain && at.Before(r.removed) {
						recordKeyLookup(ctx, kid, attempt == 0)
						return r.key, nil
					}
				}
			}
		}
		if attempt > 0 {
			break
		}
		err := p.refresh(ctx, false)
		recordRefetch(ctx, kid, err)
		if err != nil && ctx.Err() != nil {
			return nil, keysUnavailable(ctx.Err())
		}
	}
	s := p.snap.Load()
	if s == nil || p.o.now().Sub(s.fetchedAt) > p.o.maxStale {
		p.mu.Lock()
		cause := p.lastErr
		p.mu.Unlock()
		return nil, keysUnavailable(cause)
	}
	return nil, errUnknownKID
}

// hasKey reports whether kid is in the current JWKS and the keys are not
// older than max-stale (the verified-token cache relies on it).
func (p *KeyProvider) hasKey(kid string, now time.Time) bool {
	s := p.snap.Load()
	if s == nil || now.Sub(s.fetchedAt) > p.o.maxStale {
		return false
	}
	_, ok := s.keys[kid]
	return ok
}

// KeyState is the provider's state for readiness probes and metrics.
type KeyState struct {
	Keys        int       // keys currently served
	LastSuccess time.Time // zero before the first successful fetch
	LastError   error     // nil after a success
	Age         time.Duration
	Stale       bool // serving keys older than the TTL because refreshes fail
}

// State returns the current state.
func (p *KeyProvider) State() KeyState {
	p.mu.Lock()
	lastErr := p.lastErr
	p.mu.Unlock()
	st := KeyState{LastError: lastErr}
	if s := p.snap.Load(); s != nil {
		st.Keys = len(s.keys)
		st.LastSuccess = s.fetchedAt
		st.Age = p.o.now().Sub(s.fetchedAt)
		st.Stale = st.Age > p.o.ttl
	}
	return st
}

// Ready returns nil when keys are loaded and not older than max-stale.
func (p *KeyProvider) Ready() error {
	s := p.snap.Load()
	if s == nil {
		p.mu.Lock()
		cause := p.lastErr
		p.mu.Unlock()
		return &Error{Code: CodeKeysUnavailable, Reason: "no_keys", Description: "no signing keys loaded yet", Err: cause}
	}
	if age := p.o.now().Sub(s.fetchedAt); age > p.o.maxStale {
		return &Error{Code: CodeKeysUnavailable, Reason: "keys_too_old", Description: fmt.Sprintf("signing keys are %v old", age.Round(time.Second))}
	}
	return nil
}
