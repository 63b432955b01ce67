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
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

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
	ch := p.claimFetch(force, trace.SpanContextFromContext(ctx))
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
//
// trigger is the span of the request that asked (invalid for the schedule):
// the fetch's own span links to it.
func (p *KeyProvider) claimFetch(force bool, trigger trace.SpanContext) <-chan singleflight.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.o.now()
	fetch := func() (any, error) { return p.fetch(trigger) }
	if force {
		return p.sf.DoChan("jwks", fetch)
	}
	if p.lastAttempt.IsZero() || now.Sub(p.lastAttempt) >= p.o.cooldown {
		p.lastAttempt = now
		// DoChan under p.mu so that a joiner below can never register its
		// no-op before the real fetch.
		return p.sf.DoChan("jwks", fetch)
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
	p.sf.DoChan("jwks", func() (any, error) { return p.fetch(trace.SpanContext{}) })
}

// fetch runs detached from any request context: a cancelled request must not
// abort the fetch others are waiting for. Its span is a root of its own,
// linked to the request whose unknown kid triggered it (if any).
func (p *KeyProvider) fetch(trigger trace.SpanContext) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	ctx, span := startFetchSpan(ctx, "authz.jwks.fetch", trigger)
	defer span.End()
	keys, err := p.fetchKeys(ctx)
	now := p.o.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err
		p.o.metrics.keyFetch(false)
		endFetchSpan(span, err)
		return nil, err
	}
	span.SetAttributes(attribute.Int("authz.keys", len(keys)), attribute.String("url.full", p.jwksURL))
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
