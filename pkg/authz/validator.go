package authz

import (
	"context"
	"errors"
	"time"
)

// RevocationChecker reports when a subject's tokens were revoked (a blocked
// user). Tokens whose iat is not after the revocation time are rejected with
// reason "revoked". Implementations must be safe for concurrent use and fast:
// they are consulted on every request, also for cached tokens.
// natsauth provides one backed by a JetStream KV bucket.
type RevocationChecker interface {
	RevokedAt(subject string) (time.Time, bool)
}

// Validator verifies Auth0 access tokens (RS256 only).
//
// API SKELETON — implementation pending (see issue 2). The signatures here are
// the contract other packages build on; keep them.
type Validator struct {
	keys *KeyProvider
}

// Option configures a Validator.
type Option func(*validatorOptions) error

type validatorOptions struct{}

// WithIssuers sets the accepted issuers, compared exactly (e.g. "https://tenant.eu.auth0.com/"
// and a custom domain). Required.
func WithIssuers(iss ...string) Option { return nil }

// WithAudiences sets the accepted audiences (any-of against a string or array aud). Required.
func WithAudiences(aud ...string) Option { return nil }

// WithLeeway sets the clock skew allowed on exp, nbf and iat (default 30 s).
func WithLeeway(d time.Duration) Option { return nil }

// WithRolesClaim sets the namespaced roles claim (default DefaultRolesClaim).
func WithRolesClaim(name string) Option { return nil }

// WithTokenCache sets the size of the verified-token cache (default 10000; 0 disables).
func WithTokenCache(size int) Option { return nil }

// WithRevocations makes the validator reject revoked subjects' tokens.
func WithRevocations(r RevocationChecker) Option { return nil }

// WithMetrics records decisions and cache figures in m.
func WithMetrics(m *Metrics) Option { return nil }

// NewValidator returns a Validator that takes keys from keys.
func NewValidator(keys *KeyProvider, opts ...Option) (*Validator, error) {
	return nil, errors.New("authz: not implemented")
}

// Validate verifies token now and returns its claims, or an *Error
// (CodeInvalidToken, or CodeKeysUnavailable when no keys can be had).
func (v *Validator) Validate(ctx context.Context, token string) (*Claims, error) {
	return nil, errors.New("authz: not implemented")
}

// ValidateAt verifies token as of the instant at: signature, algorithm,
// issuer and audience as usual, but exp/nbf/iat are checked against at
// (with leeway) instead of the current time, and keys that have rotated out
// of the JWKS but were seen within the retention window still verify.
// It is meant for events taken from a durable log, with at = the time the
// log stored the message; the caller bounds how old at may be. Revocation
// applies as in Validate. Results are not cached.
func (v *Validator) ValidateAt(ctx context.Context, token string, at time.Time) (*Claims, error) {
	return nil, errors.New("authz: not implemented")
}

// Keys returns the key provider (for readiness and metrics).
func (v *Validator) Keys() *KeyProvider { return v.keys }
