package authz

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// KeyProvider fetches, caches and refreshes an issuer's RS256 signing keys.
//
// API SKELETON — implementation pending (see issue 2).
type KeyProvider struct{}

// KeyOption configures a KeyProvider.
type KeyOption func(*keyOptions) error

type keyOptions struct{}

// WithJWKSURL fetches keys from an explicit JWKS URL (skips discovery).
func WithJWKSURL(url string) KeyOption { return nil }

// WithDiscovery finds jwks_uri in <issuerURL>/.well-known/openid-configuration.
func WithDiscovery(issuerURL string) KeyOption { return nil }

// WithHTTPClient sets the HTTP client (default: 5 s timeout).
func WithHTTPClient(c *http.Client) KeyOption { return nil }

// WithTTL sets how long fetched keys are fresh (default 10 min); they are
// refreshed in the background before that, without blocking requests.
func WithTTL(d time.Duration) KeyOption { return nil }

// WithRefetchCooldown bounds refetches triggered by unknown kids (default 30 s):
// at most one per cool-down, single-flight.
func WithRefetchCooldown(d time.Duration) KeyOption { return nil }

// WithMaxStale sets how long the last good keys keep serving while the
// endpoint fails (default 24 h).
func WithMaxStale(d time.Duration) KeyOption { return nil }

// WithRetainRotated keeps keys that left the JWKS for d, for ValidateAt only
// (default 7 days; 0 disables).
func WithRetainRotated(d time.Duration) KeyOption { return nil }

// WithKeyMetrics records fetches, failures and key age in m.
func WithKeyMetrics(m *Metrics) KeyOption { return nil }

// NewKeyProvider returns a provider; exactly one of WithJWKSURL or WithDiscovery is required.
func NewKeyProvider(opts ...KeyOption) (*KeyProvider, error) {
	return nil, errors.New("authz: not implemented")
}

// Start loads the keys once (its error is returned, but the provider keeps
// trying in the background) and refreshes them until ctx ends.
func (p *KeyProvider) Start(ctx context.Context) error { return errors.New("authz: not implemented") }

// KeyState is the provider's state for readiness probes and metrics.
type KeyState struct {
	Keys        int       // keys currently served
	LastSuccess time.Time // zero before the first successful fetch
	LastError   error     // nil after a success
	Age         time.Duration
	Stale       bool // serving keys older than the TTL because refreshes fail
}

// State returns the current state.
func (p *KeyProvider) State() KeyState { return KeyState{} }

// Ready returns nil when keys are loaded and not older than max-stale.
func (p *KeyProvider) Ready() error { return errors.New("authz: not implemented") }

// Metrics holds the Prometheus collectors of this package.
type Metrics struct{}
