package m2m

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"
)

// tracerName is the instrumentation scope of the token fetch span.
const tracerName = "github.com/authmesh/authmesh/pkg/authz/m2m"

// TokenSource supplies a bearer token. Implementations are safe for
// concurrent use.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Invalidator is a TokenSource that can drop a token receivers refused, such
// as ClientCredentials.
type Invalidator interface {
	Invalidate(tok string)
}

// Config configures a service's own (M2M) identity.
type Config struct {
	TokenURL     string   // AUTH0_TOKEN_URL, e.g. https://tenant/oauth/token. Required.
	ClientID     string   // Required.
	ClientSecret string   // Required. Never appears in errors.
	Audience     string   // Auth0's audience parameter (the API identifier). Required.
	Scopes       []string // Optional: Auth0 grants all of the client grant's scopes when empty.

	// HTTPClient defaults to a client with a 10 s timeout.
	HTTPClient *http.Client
	// AuthStyle defaults to oauth2.AuthStyleInParams (client_secret_post, which
	// Auth0 documents); auto-detection would double the requests on failures.
	AuthStyle oauth2.AuthStyle
	// RefreshAfter is the fraction of a token's lifetime after which it is
	// refreshed (default 0.8). Callers keep getting the current token while
	// the refresh runs, so nobody waits and nobody sends a token about to expire.
	RefreshAfter float64
	// MaxAttempts bounds the tries of one fetch when the tenant is down or
	// throttling (5xx, 429, network errors); default 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential wait between tries
	// (defaults 200 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration

	now func() time.Time // tests
}

// ClientCredentials is a TokenSource backed by the OAuth 2.0 client-credentials
// grant (golang.org/x/oauth2/clientcredentials with Auth0's audience).
//
// The token is cached and refreshed at RefreshAfter of its lifetime, never at
// expiry; concurrent callers share one fetch (singleflight), so 100 callers
// cost one request against Auth0's M2M quota. A fetch that fails on a
// retryable error is retried with exponential backoff; while a refresh fails
// the cached token is served until it expires.
//
//	ts, err := m2m.NewClientCredentials(m2m.Config{
//		TokenURL: "https://tenant.eu.auth0.com/oauth/token",
//		ClientID: "orders-service", ClientSecret: secret,
//		Audience: "https://api.authmesh.dev",
//	})
//	ctx = natsauth.AsService(ctx, ts)
type ClientCredentials struct {
	cfg    Config
	oauth  clientcredentials.Config
	client *http.Client
	group  singleflight.Group

	mu        sync.RWMutex
	token     string
	expiry    time.Time
	refreshAt time.Time
}

// NewClientCredentials validates cfg and returns a token source. It does not
// fetch: the first Token call does.
func NewClientCredentials(cfg Config) (*ClientCredentials, error) {
	if cfg.RefreshAfter == 0 {
		cfg.RefreshAfter = 0.8
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.AuthStyle == oauth2.AuthStyleAutoDetect {
		cfg.AuthStyle = oauth2.AuthStyleInParams
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	var errs []error
	if u, err := url.Parse(cfg.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, errors.New("TokenURL must be an absolute http(s) URL"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("ClientID is required"))
	}
	if cfg.ClientSecret == "" {
		errs = append(errs, errors.New("client secret is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("audience is required"))
	}
	if cfg.RefreshAfter <= 0 || cfg.RefreshAfter >= 1 {
		errs = append(errs, errors.New("RefreshAfter must be in (0, 1)"))
	}
	if cfg.MaxAttempts < 1 || cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff {
		errs = append(errs, errors.New("MaxAttempts must be ≥ 1 and 0 ≤ MinBackoff ≤ MaxBackoff"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("m2m: client credentials config: %w", err)
	}
	return &ClientCredentials{
		cfg:    cfg,
		client: client,
		oauth: clientcredentials.Config{
			ClientID:       cfg.ClientID,
			ClientSecret:   cfg.ClientSecret,
			TokenURL:       cfg.TokenURL,
			Scopes:         cfg.Scopes,
			EndpointParams: url.Values{"audience": {cfg.Audience}},
			AuthStyle:      cfg.AuthStyle,
		},
	}, nil
}

// Token returns a valid access token, fetching one if none is cached or the
// cached one is past its refresh point.
func (s *ClientCredentials) Token(ctx context.Context) (string, error) {
	now := s.cfg.now()
	s.mu.RLock()
	tok, expiry, refreshAt := s.token, s.expiry, s.refreshAt
	s.mu.RUnlock()

	usable := tok != "" && now.Before(expiry)
	if usable && now.Before(refreshAt) {
		return tok, nil
	}
	// One fetch for everybody; it runs detached from this caller's context so
	// that a caller giving up does not fail the others.
	trigger := trace.SpanContextFromContext(ctx)
	ch := s.group.DoChan("token", func() (any, error) { return s.fetch(trigger) })
	if usable {
		return tok, nil // the refresh proceeds in the background
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("m2m: client credentials token for %q: %w", s.cfg.ClientID, ctx.Err())
	}
}

// Invalidate drops the cached token if it is still tok, so that the next Token
// call fetches a new one. Call it when a receiver refused tok as invalid (for
// example after its signing key was revoked): the token looks fine locally but
// will never be accepted again. A token other than the cached one is ignored,
// so callers that saw the same refusal do not discard a fresh token.
func (s *ClientCredentials) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok != "" && s.token == tok {
		s.token, s.expiry, s.refreshAt = "", time.Time{}, time.Time{}
	}
}

// fetch gets a token from the tenant, retrying. Its span ("m2m.token.fetch")
// is a root of its own, since every waiting caller shares it, linked to the
// caller that started it; it names the client id (a machine's), never the
// secret or the token.
func (s *ClientCredentials) fetch(trigger trace.SpanContext) (tok any, err error) {
	budget := time.Duration(s.cfg.MaxAttempts) * (s.cfg.MaxBackoff + s.client.Timeout + time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithNewRoot(),
		trace.WithAttributes(attribute.String("authz.azp", s.cfg.ClientID))}
	if trigger.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: trigger}))
	}
	ctx, span := otel.Tracer(tracerName).Start(ctx, "m2m.token.fetch", opts...)
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.client)

	wait := s.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		start := s.cfg.now()
		t, err := s.oauth.Token(ctx)
		span.SetAttributes(attribute.Int("m2m.attempts", attempt))
		if err == nil {
			return s.store(t, start), nil
		}
		if attempt >= s.cfg.MaxAttempts || !retryable(err) {
			return nil, s.sanitize(err, attempt)
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, s.sanitize(err, attempt)
		}
		wait = min(wait*2, s.cfg.MaxBackoff)
	}
}

func (s *ClientCredentials) store(t *oauth2.Token, start time.Time) string {
	lifetime := expiresIn(t)
	if lifetime <= 0 {
		if exp, ok := jwtExpiry(t.AccessToken); ok {
			lifetime = exp.Sub(start)
		}
	}
	if lifetime <= 0 {
		// No expires_in and no readable exp: assume a short life rather than
		// caching a token that may already be dead.
		lifetime = time.Minute
	}
	s.mu.Lock()
	s.token = t.AccessToken
	s.expiry = start.Add(lifetime)
	s.refreshAt = start.Add(time.Duration(float64(lifetime) * s.cfg.RefreshAfter))
	s.mu.Unlock()
	return t.AccessToken
}

// expiresIn reads the token's lifetime from the raw expires_in (the
// clientcredentials package does not copy it into Token.ExpiresIn; Expiry is
// computed from the real clock).
func expiresIn(t *oauth2.Token) time.Duration {
	switch v := t.Extra("expires_in").(type) {
	case float64:
		return time.Duration(v * float64(time.Second))
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return time.Duration(n) * time.Second
		}
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	if t.ExpiresIn > 0 {
		return time.Duration(t.ExpiresIn) * time.Second
	}
	if !t.Expiry.IsZero() {
		return time.Until(t.Expiry)
	}
	return 0
}

// retryable reports whether a failed fetch may succeed later: the tenant is
// down, unreachable or throttling. Credential or grant errors (4xx) are not.
func retryable(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response == nil {
			return false
		}
		c := re.Response.StatusCode
		return c == http.StatusTooManyRequests || c == http.StatusRequestTimeout || c >= 500
	}
	// A 200 without a token is a misbehaving tenant, not a passing fault.
	// x/oauth2 reports it with an unexported errors.New, so its text is the
	// only handle on it.
	return !strings.Contains(err.Error(), "missing access_token")
}

// sanitize builds an error that names the client and the cause but never the
// secret (an echoing proxy or a verbose transport error could contain it).
func (s *ClientCredentials) sanitize(err error, attempts int) error {
	var msg string
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.Response != nil:
		msg = fmt.Sprintf("status %d", re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += " " + re.ErrorCode
		}
		if re.ErrorDescription != "" {
			msg += ": " + re.ErrorDescription
		}
	default:
		msg = err.Error()
	}
	if s.cfg.ClientSecret != "" {
		msg = strings.ReplaceAll(msg, s.cfg.ClientSecret, "[REDACTED]")
		msg = strings.ReplaceAll(msg, url.QueryEscape(s.cfg.ClientSecret), "[REDACTED]")
	}
	return fmt.Errorf("m2m: client credentials token for %q after %d attempt(s): %s", s.cfg.ClientID, attempts, msg)
}

// jwtExpiry reads exp from a JWT without verifying it: it only decides when
// to refresh our own token, never whether to trust one.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return time.Time{}, false
	}
	n, err := c.Exp.Int64()
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
