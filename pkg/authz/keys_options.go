package authz

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// KeyOption configures a KeyProvider.
type KeyOption func(*keyOptions) error

type keyOptions struct {
	jwksURL      string
	discoveryURL string
	client       *http.Client
	ttl          time.Duration
	cooldown     time.Duration
	maxStale     time.Duration
	retain       time.Duration
	alg          jose.SignatureAlgorithm
	metrics      *Metrics
	now          func() time.Time
}

// WithJWKSURL fetches keys from an explicit JWKS URL (skips discovery).
func WithJWKSURL(u string) KeyOption {
	return func(o *keyOptions) error {
		if err := checkHTTPURL(u); err != nil {
			return fmt.Errorf("authz: JWKS URL: %w", err)
		}
		o.jwksURL = u
		return nil
	}
}

// WithDiscovery finds jwks_uri in <issuerURL>/.well-known/openid-configuration.
func WithDiscovery(issuerURL string) KeyOption {
	return func(o *keyOptions) error {
		if err := checkHTTPURL(issuerURL); err != nil {
			return fmt.Errorf("authz: issuer URL: %w", err)
		}
		o.discoveryURL = strings.TrimSuffix(issuerURL, "/") + "/.well-known/openid-configuration"
		return nil
	}
}

// WithHTTPClient sets the HTTP client (default: 5 s timeout). A client
// without a timeout gets each request bounded by the default timeout anyway.
func WithHTTPClient(c *http.Client) KeyOption {
	return func(o *keyOptions) error {
		if c == nil {
			return errors.New("authz: nil HTTP client")
		}
		o.client = c
		return nil
	}
}

// WithTTL sets how long fetched keys are fresh (default 10 min); they are
// refreshed in the background before that, without blocking requests.
func WithTTL(d time.Duration) KeyOption {
	return durationOption("key TTL", d, false, func(o *keyOptions) *time.Duration { return &o.ttl })
}

// WithRefetchCooldown bounds refetches triggered by unknown kids (default 30 s):
// at most one per cool-down, single-flight.
func WithRefetchCooldown(d time.Duration) KeyOption {
	return durationOption("refetch cool-down", d, true, func(o *keyOptions) *time.Duration { return &o.cooldown })
}

// WithMaxStale sets how long the last good keys keep serving while the
// endpoint fails (default 24 h).
func WithMaxStale(d time.Duration) KeyOption {
	return durationOption("max-stale", d, false, func(o *keyOptions) *time.Duration { return &o.maxStale })
}

// WithRetainRotated keeps keys that left the JWKS for d, for TxnValidator.ValidateAt only
// (default 7 days; 0 disables).
func WithRetainRotated(d time.Duration) KeyOption {
	return durationOption("retention", d, true, func(o *keyOptions) *time.Duration { return &o.retain })
}

// durationOption sets the duration field picks to d, refusing a negative d,
// and zero too unless zeroOK.
func durationOption(name string, d time.Duration, zeroOK bool, field func(*keyOptions) *time.Duration) KeyOption {
	return func(o *keyOptions) error {
		switch {
		case d < 0 && zeroOK:
			return fmt.Errorf("authz: %s must not be negative, got %v", name, d)
		case d <= 0 && !zeroOK:
			return fmt.Errorf("authz: %s must be positive, got %v", name, d)
		}
		*field(o) = d
		return nil
	}
}

// WithAlgorithm sets the one algorithm whose keys are accepted from the JWKS:
// RS256 (the default, Auth0's) or ES256 (P-256 keys). Keys for anything else
// are ignored.
func WithAlgorithm(alg string) KeyOption {
	return func(o *keyOptions) error {
		switch a := jose.SignatureAlgorithm(alg); a {
		case jose.RS256, jose.ES256:
			o.alg = a
			return nil
		}
		return fmt.Errorf("authz: key algorithm %q: want RS256 or ES256", alg)
	}
}

// WithKeyMetrics records fetches, failures and key age in m.
func WithKeyMetrics(m *Metrics) KeyOption {
	return func(o *keyOptions) error {
		o.metrics = m
		return nil
	}
}

// NewKeyProvider returns a provider; exactly one of WithJWKSURL or WithDiscovery is required.
//
//	keys, err := authz.NewKeyProvider(authz.WithJWKSURL("https://tenant.eu.auth0.com/.well-known/jwks.json"))
//	if err != nil { ... }
//	go keys.Start(ctx) // or call it and log its error: the provider keeps trying
func NewKeyProvider(opts ...KeyOption) (*KeyProvider, error) {
	o := keyOptions{
		client:   &http.Client{Timeout: DefaultHTTPTimeout},
		ttl:      DefaultKeyTTL,
		cooldown: DefaultRefetchCooldown,
		maxStale: DefaultMaxStale,
		retain:   DefaultRetainRotated,
		alg:      jose.RS256,
		now:      time.Now,
	}
	if err := applyOptions(&o, opts); err != nil {
		return nil, err
	}
	switch {
	case o.jwksURL == "" && o.discoveryURL == "":
		return nil, errors.New("authz: key provider needs WithJWKSURL or WithDiscovery")
	case o.jwksURL != "" && o.discoveryURL != "":
		return nil, errors.New("authz: WithJWKSURL and WithDiscovery are exclusive")
	}
	if o.maxStale < o.ttl {
		o.maxStale = o.ttl
	}
	p := &KeyProvider{o: o, jwksURL: o.jwksURL}
	if o.metrics != nil {
		o.metrics.attachKeys(p)
	}
	return p, nil
}
