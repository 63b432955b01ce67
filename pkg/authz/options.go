package authz

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults of the validators.
const (
	DefaultLeeway         = 30 * time.Second
	DefaultTokenCacheSize = 10000

	// MaxTokenBytes bounds the tokens we look at. Auth0 access tokens are
	// 1–2 KB; anything far larger is an attack on the parser.
	MaxTokenBytes = 16 << 10
)

// Option configures a Validator or a TxnValidator.
type Option func(*validatorOptions) error

type validatorOptions struct {
	issuers     []string
	audiences   []string
	leeway      time.Duration
	rolesClaim  string
	cacheSize   int
	revocations RevocationChecker
	revLoader   RevocationLoader // revocations, if it has a loading phase
	metrics     *Metrics
	typ         string // WithRequiredType; "" accepts either Auth0 profile
	now         func() time.Time
}

// newValidatorOptions applies opts over the defaults and checks what both
// validators require.
func newValidatorOptions(opts []Option) (validatorOptions, error) {
	o := validatorOptions{
		leeway:     DefaultLeeway,
		rolesClaim: DefaultRolesClaim,
		cacheSize:  DefaultTokenCacheSize,
		now:        time.Now,
	}
	if err := applyOptions(&o, opts); err != nil {
		return o, err
	}
	if len(o.issuers) == 0 {
		return o, errors.New("authz: WithIssuers is required")
	}
	if len(o.audiences) == 0 {
		return o, errors.New("authz: WithAudiences is required")
	}
	return o, nil
}

// applyOptions applies opts to o in order, skipping nil ones, and stops at
// the first error.
func applyOptions[T any, O ~func(*T) error](o *T, opts []O) error {
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return err
		}
	}
	return nil
}

// WithIssuers sets the accepted issuers, compared exactly (e.g. "https://tenant.eu.auth0.com/"
// and a custom domain). Required.
func WithIssuers(iss ...string) Option {
	return appendNames("issuer", iss, func(o *validatorOptions) *[]string { return &o.issuers })
}

// WithAudiences sets the accepted audiences (any-of against a string or array aud). Required.
func WithAudiences(aud ...string) Option {
	return appendNames("audience", aud, func(o *validatorOptions) *[]string { return &o.audiences })
}

// appendNames appends names to the list field picks, refusing an empty one.
func appendNames(what string, names []string, field func(*validatorOptions) *[]string) Option {
	return func(o *validatorOptions) error {
		if slices.Contains(names, "") {
			return fmt.Errorf("authz: empty %s", what)
		}
		*field(o) = append(*field(o), names...)
		return nil
	}
}

// WithLeeway sets the clock skew allowed on exp, nbf and iat (default 30 s).
func WithLeeway(d time.Duration) Option {
	return func(o *validatorOptions) error {
		if d < 0 || d > 10*time.Minute {
			return fmt.Errorf("authz: leeway %v out of range [0, 10m]", d)
		}
		o.leeway = d
		return nil
	}
}

// WithRolesClaim sets the namespaced roles claim (default DefaultRolesClaim).
func WithRolesClaim(name string) Option {
	return func(o *validatorOptions) error {
		if name == "" {
			return errors.New("authz: empty roles claim")
		}
		o.rolesClaim = name
		return nil
	}
}

// WithTokenCache sets the size of the verified-token cache (default 10000; 0 disables).
func WithTokenCache(size int) Option {
	return func(o *validatorOptions) error {
		if size < 0 {
			return fmt.Errorf("authz: negative token cache size %d", size)
		}
		o.cacheSize = size
		return nil
	}
}

// WithRevocations makes the validator reject revoked subjects' tokens.
func WithRevocations(r RevocationChecker) Option {
	return func(o *validatorOptions) error {
		o.revocations = r
		o.revLoader, _ = r.(RevocationLoader)
		return nil
	}
}

// WithMetrics records decisions and cache figures in m.
func WithMetrics(m *Metrics) Option {
	return func(o *validatorOptions) error {
		o.metrics = m
		return nil
	}
}
