package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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
// older than max-stale; keys that leave the JWKS are retained (for ValidateAt
// only) for the retention window.
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
	return func(o *keyOptions) error {
		if d <= 0 {
			return fmt.Errorf("authz: key TTL must be positive, got %v", d)
		}
		o.ttl = d
		return nil
	}
}

// WithRefetchCooldown bounds refetches triggered by unknown kids (default 30 s):
// at most one per cool-down, single-flight.
func WithRefetchCooldown(d time.Duration) KeyOption {
	return func(o *keyOptions) error {
		if d < 0 {
			return fmt.Errorf("authz: refetch cool-down must not be negative, got %v", d)
		}
		o.cooldown = d
		return nil
	}
}

// WithMaxStale sets how long the last good keys keep serving while the
// endpoint fails (default 24 h).
func WithMaxStale(d time.Duration) KeyOption {
	return func(o *keyOptions) error {
		if d <= 0 {
			return fmt.Errorf("authz: max-stale must be positive, got %v", d)
		}
		o.maxStale = d
		return nil
	}
}

// WithRetainRotated keeps keys that left the JWKS for d, for ValidateAt only
// (default 7 days; 0 disables).
func WithRetainRotated(d time.Duration) KeyOption {
	return func(o *keyOptions) error {
		if d < 0 {
			return fmt.Errorf("authz: retention must not be negative, got %v", d)
		}
		o.retain = d
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
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
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

// Start loads the keys once (its error is returned, but the provider keeps
// trying in the background) and refreshes them until ctx ends.
func (p *KeyProvider) Start(ctx context.Context) error {
	err := p.refresh(ctx, true)
	go p.loop(ctx, err)
	return err
}

func (p *KeyProvider) loop(ctx context.Context, lastErr error) {
	// Refresh well before the TTL runs out so requests never see expired keys;
	// on failure retry with a backoff bounded by the TTL.
	backoff := time.Second
	for {
		wait := p.o.ttl * 4 / 5
		if lastErr != nil {
			wait = min(backoff, p.o.ttl)
			backoff = min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		lastErr = p.refresh(ctx, true)
	}
}

// refresh fetches the JWKS. force ignores the cool-down (scheduled refreshes);
// otherwise the fetch happens only when the last attempt is older than the
// cool-down. Concurrent callers share one in-flight fetch.
func (p *KeyProvider) refresh(ctx context.Context, force bool) error {
	ch := p.claimFetch(force)
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errCoolingDown = errors.New("authz: key refetch cooling down")

// claimFetch starts a fetch if allowed, or joins one in flight; when neither
// is possible the channel yields errCoolingDown at once.
func (p *KeyProvider) claimFetch(force bool) <-chan singleflight.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.o.now()
	if force {
		return p.sf.DoChan("jwks", p.fetch)
	}
	if p.lastAttempt.IsZero() || now.Sub(p.lastAttempt) >= p.o.cooldown {
		p.lastAttempt = now
		// DoChan under p.mu so that a joiner below can never register its
		// no-op before the real fetch.
		return p.sf.DoChan("jwks", p.fetch)
	}
	// Join a fetch in flight; if none is, the no-op returns at once.
	return p.sf.DoChan("jwks", func() (any, error) { return nil, errCoolingDown })
}

// refreshAsync starts a refresh without waiting for it (stale keys on the
// request path when Start was not called or the loop is backing off).
func (p *KeyProvider) refreshAsync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.o.now()
	if !p.lastAttempt.IsZero() && now.Sub(p.lastAttempt) < p.o.cooldown {
		return
	}
	p.lastAttempt = now
	p.sf.DoChan("jwks", p.fetch)
}

// fetch runs detached from any request context: a cancelled request must not
// abort the fetch others are waiting for.
func (p *KeyProvider) fetch() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	keys, err := p.fetchKeys(ctx)
	now := p.o.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err
		p.o.metrics.keyFetch(false)
		return nil, err
	}
	p.lastErr = nil
	p.o.metrics.keyFetch(true)
	p.install(keys, now)
	return nil, nil
}

func (p *KeyProvider) timeout() time.Duration {
	if p.o.client.Timeout > 0 {
		return p.o.client.Timeout
	}
	return DefaultHTTPTimeout
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

func (p *KeyProvider) fetchKeys(ctx context.Context) (map[string]any, error) {
	u, err := p.keysURL(ctx)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := p.getJSON(ctx, u, &set); err != nil {
		return nil, fmt.Errorf("authz: JWKS: %w", err)
	}
	keys := make(map[string]any, len(set.Keys))
	for _, raw := range set.Keys {
		kid, pub, ok := usableKey(raw, p.o.alg)
		if !ok {
			continue // one unsupported key must not fail the whole set
		}
		if _, dup := keys[kid]; dup {
			return nil, fmt.Errorf("authz: JWKS: duplicate kid %q", kid)
		}
		keys[kid] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("authz: JWKS: no usable %s signing keys", p.o.alg)
	}
	return keys, nil
}

// usableKey accepts only public keys meant for alg signatures, with a kid:
// RSA keys of at least 2048 bits for RS256, P-256 keys for ES256. A private
// key in a JWKS is refused outright.
func usableKey(raw json.RawMessage, alg jose.SignatureAlgorithm) (string, any, bool) {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return "", nil, false
	}
	if k.KeyID == "" || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
		return "", nil, false
	}
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return "", nil, false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return k.KeyID, pub, alg == jose.RS256 && pub.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return k.KeyID, pub, alg == jose.ES256 && pub.Curve == elliptic.P256()
	}
	return "", nil, false
}

func (p *KeyProvider) keysURL(ctx context.Context) (string, error) {
	p.mu.Lock()
	u := p.jwksURL
	p.mu.Unlock()
	if u != "" {
		return u, nil
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.getJSON(ctx, p.o.discoveryURL, &doc); err != nil {
		return "", fmt.Errorf("authz: discovery: %w", err)
	}
	if err := checkHTTPURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("authz: discovery: jwks_uri: %w", err)
	}
	p.mu.Lock()
	p.jwksURL = doc.JWKSURI
	p.mu.Unlock()
	return doc.JWKSURI, nil
}

func (p *KeyProvider) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.o.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("GET %s: response larger than %d bytes", u, maxJWKSBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: not JSON: %w", u, err)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
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

// lookup finds kid among the current keys or, when at is not zero (the
// ValidateAt path), also among keys retired within the retention window.
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
					return k, nil
				}
				if !at.IsZero() {
					// A key leaves an Auth0 JWKS only when it is revoked: it
					// verifies messages stored before that, never after.
					if r, ok := s.retired[kid]; ok && now.Sub(r.removed) <= p.o.retain && at.Before(r.removed) {
						return r.key, nil
					}
				}
			}
		}
		if attempt > 0 {
			break
		}
		err := p.refresh(ctx, false)
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
