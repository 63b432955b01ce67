package authz

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// Transaction tokens (draft-ietf-oauth-transaction-tokens-10) carry a
// caller's identity inside the mesh instead of its access token: short-lived,
// narrowed to what one hop needs, bound to one transaction, addressed to the
// mesh's trust domain and signed by the Transaction Token Service, never by
// the tenant. No HTTP edge accepts one (the access-token Validator pins RS256,
// the tenant's issuer and the API audience), and no NATS receiver accepts an
// access token.
const (
	// TxnTokenType is the JWT typ header every transaction token carries.
	TxnTokenType = "txntoken+jwt"
	// TokenTypeTxn is the RFC 8693 token type URN of a transaction token.
	TokenTypeTxn = "urn:ietf:params:oauth:token-type:txn_token"
	// TokenTypeAccess is the RFC 8693 token type URN of an access token.
	TokenTypeAccess = "urn:ietf:params:oauth:token-type:access_token"
	// GrantTypeTokenExchange is RFC 8693's grant type.
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

	// DefaultTxnIssuer is the iss of the mesh's Transaction Token Service.
	DefaultTxnIssuer = "urn:authmesh:tts"
	// DefaultTrustDomain is the aud of every transaction token.
	DefaultTrustDomain = "urn:authmesh:mesh"

	// MaxTxnLifetime bounds exp - iat of an accepted transaction token: the
	// service issues minutes; anything longer was not issued by it.
	MaxTxnLifetime = time.Hour
	// MaxEventTxnLifetime bounds exp - iat of a transaction token bound to
	// one event (tctx.evt): it waits in an outbox until its event is
	// published, through an outage of NATS, and authorizes only that event.
	MaxEventTxnLifetime = 24 * time.Hour
)

// TxnClaims is the payload of a transaction token, as the Transaction Token
// Service writes it.
type TxnClaims struct {
	Issuer    string          `json:"iss"`
	Audience  string          `json:"aud"`
	IssuedAt  int64           `json:"iat"`
	ExpiresAt int64           `json:"exp"`
	Txn       string          `json:"txn"`
	Subject   string          `json:"sub"`
	Scope     string          `json:"scope"`
	ReqWL     string          `json:"req_wl"`
	TCtx      json.RawMessage `json:"tctx,omitempty"`
}

// TxnValidator verifies transaction tokens (ES256 only, typ txntoken+jwt,
// the Transaction Token Service's issuer and the trust domain as audience).
// Its keys come from the service's JWKS through a KeyProvider configured with
// WithAlgorithm("ES256"). NATS receivers use it (natsauth.Verifier): live
// requests through Validate, stored events through ValidateAt.
type TxnValidator struct {
	keys    *KeyProvider
	o       validatorOptions
	cache   *tokenCache
	headers headerCache
}

// NewTxnValidator returns a TxnValidator. WithIssuers (the service's issuer,
// e.g. DefaultTxnIssuer) and WithAudiences (the trust domain, e.g.
// DefaultTrustDomain) are required; WithLeeway, WithRevocations,
// WithTokenCache and WithMetrics apply as for Validator.
//
//	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL("http://tts:8406/.well-known/jwks.json"),
//		authz.WithAlgorithm("ES256"))
//	tv, err := authz.NewTxnValidator(keys,
//		authz.WithIssuers(authz.DefaultTxnIssuer), authz.WithAudiences(authz.DefaultTrustDomain),
//		authz.WithRevocations(watcher))
func NewTxnValidator(keys *KeyProvider, opts ...Option) (*TxnValidator, error) {
	o, err := newValidatorOptions(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case keys == nil:
		return nil, errors.New("authz: nil key provider")
	case keys.o.alg != jose.ES256:
		return nil, errors.New("authz: transaction tokens are ES256: the key provider must serve ES256 keys")
	}
	v := &TxnValidator{keys: keys, o: o, headers: headerCache{check: parseTxnHeader}}
	if o.cacheSize > 0 {
		v.cache = newTokenCache(o.cacheSize)
	}
	return v, nil
}

// Keys returns the key provider (for readiness).
func (v *TxnValidator) Keys() *KeyProvider { return v.keys }

// Validate verifies a transaction token now: current keys only, revocation
// of tokens issued before it.
func (v *TxnValidator) Validate(ctx context.Context, token string) (*Claims, error) {
	return v.validate(ctx, token, v.o.now(), time.Time{})
}

// ValidateAt verifies a transaction token as of at, the time JetStream stored
// the message that carried it: the times are checked as of at, a key the
// service has since retired still verifies messages stored before it left
// the JWKS (within the key provider's retention window), and revocation
// applies to messages stored at or after it.
func (v *TxnValidator) ValidateAt(ctx context.Context, token string, at time.Time) (*Claims, error) {
	if at.IsZero() {
		return nil, invalid("no_time", "no verification time was given", nil)
	}
	return v.validate(ctx, token, at, at)
}

// validate checks token as of at. stored is the zero time for a live
// request, else the message's stored time: keys good then, revocation as of
// then. What does not depend on the instant (header, signature, issuer,
// audience, required claims) is verified once per token while it has not
// expired and cached by the token's hash (a consumer sees one transaction on
// several events); the key's validity, the times and revocation are checked
// on every call. The returned Claims may be shared: treat them as read-only.
func (v *TxnValidator) validate(ctx context.Context, token string, at, stored time.Time) (*Claims, error) {
	if err := checkPresented(token); err != nil {
		return nil, err
	}
	var sum [32]byte
	var c *Claims
	cached := false
	if v.cache != nil {
		sum = tokenHash(token)
		c, cached = v.cache.get(sum, v.o.now())
		v.o.metrics.cacheLookup(cached)
	}
	if cached {
		// The key must still be good for stored: it may have left the JWKS
		// since the token was verified.
		if _, err := v.keys.lookup(ctx, c.KeyID, stored); err != nil {
			return nil, err
		}
	} else {
		var err error
		if c, err = v.verify(ctx, token, stored); err != nil {
			return nil, err
		}
		if v.cache != nil && v.o.now().Before(c.ExpiresAt) {
			c.subHash = SubjectHash(c.Subject)
			v.cache.put(sum, c)
		}
	}
	if err := checkTimes(c.ExpiresAt, time.Time{}, c.IssuedAt, at, v.o.leeway); err != nil {
		return nil, err
	}
	if err := checkRevoked(&v.o, c, revocationTime(c, stored)); err != nil {
		return nil, err
	}
	return c, nil
}

// revocationTime is the time as of which a token's subject must not be
// revoked: the message's stored time, or, for a token bound to one event,
// the time it was sealed. A block stops what a user does after it; an event
// sealed before it records what they did while they could (the Transaction
// Token Service checked their token, revocation included, when it sealed
// it), and its relay may publish it after an outage that outlasted the
// block. iat has second precision: only a token sealed a whole second before
// the revocation is spared.
func revocationTime(c *Claims, stored time.Time) time.Time {
	if c.Event == nil || stored.IsZero() {
		return stored
	}
	if sealed := c.IssuedAt.Add(time.Second); sealed.Before(stored) {
		return sealed
	}
	return stored
}

// verify checks what does not depend on the verification instant beyond
// the key: the header, the signature with a key good as of keyAt (zero: a
// current key), issuer, audience and the required claims.
func (v *TxnValidator) verify(ctx context.Context, token string, keyAt time.Time) (*Claims, error) {
	h, err := v.headers.parse(token)
	if err != nil {
		return nil, err
	}
	kid := h.Kid
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, invalid("malformed", "the token could not be read", err)
	}
	key, err := v.keys.lookup(ctx, kid, keyAt)
	if err != nil {
		return nil, err
	}
	var rc josejwt.Claims
	var tc struct {
		Txn   string          `json:"txn"`
		Scope string          `json:"scope"`
		ReqWL string          `json:"req_wl"`
		TCtx  json.RawMessage `json:"tctx"`
	}
	if err := tok.Claims(key, &rc, &tc); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return nil, invalid("bad_signature", "the token signature is invalid", err)
		}
		return nil, invalid("malformed", "the token could not be read", err)
	}
	switch {
	case !slices.Contains(v.o.issuers, rc.Issuer):
		return nil, invalid("issuer", "the token has an unexpected issuer", nil)
	case !slices.ContainsFunc(v.o.audiences, rc.Audience.Contains):
		return nil, invalid("audience", "the token is not meant for this trust domain", nil)
	case rc.Expiry == nil || rc.IssuedAt == nil:
		return nil, invalid("missing_exp", "the token has no expiry or issue time", nil)
	case rc.Expiry.Time().Sub(rc.IssuedAt.Time()) > MaxEventTxnLifetime:
		return nil, invalid("lifetime", "the token lives longer than a transaction token may", nil)
	case rc.Subject == "" || tc.Txn == "" || tc.ReqWL == "" || strings.TrimSpace(tc.Scope) == "":
		return nil, invalid("missing_claim", "the token lacks sub, txn, scope or req_wl", nil)
	}
	scopes := ParseScopes(tc.Scope)
	c := &Claims{
		Subject:            rc.Subject,
		Issuer:             rc.Issuer,
		Audience:           rc.Audience,
		IssuedAt:           rc.IssuedAt.Time(),
		ExpiresAt:          rc.Expiry.Time(),
		KeyID:              kid,
		Scopes:             scopes,
		Permissions:        scopes.List(),
		Txn:                tc.Txn,
		RequestingWorkload: tc.ReqWL,
		TxnContext:         tc.TCtx,
	}
	if err := applyTxnContext(c, tc.TCtx); err != nil {
		return nil, err
	}
	if c.Event == nil && c.ExpiresAt.Sub(c.IssuedAt) > MaxTxnLifetime {
		return nil, invalid("lifetime", "the token lives longer than a transaction token may", nil)
	}
	if client, ok := strings.CutSuffix(rc.Subject, "@clients"); ok {
		// Work no user started: the service acts as itself, and the policies
		// written for its M2M tokens (Clients) apply unchanged.
		c.AZP = client
		c.GTY = []string{"client-credentials"}
	}
	return c, nil
}

// parseTxnHeader refuses anything but an ES256 transaction token with a kid
// and no header that names or carries a key: an access token (typ JWT or
// at+jwt, RS256) is not a transaction token (explicit typing, RFC 8725 §3.11).
func parseTxnHeader(token string) (header, error) {
	h, err := decodeHeader(token)
	if err != nil {
		return h, err
	}
	if typ := strings.TrimPrefix(strings.ToLower(h.Typ), "application/"); typ != TxnTokenType {
		return h, invalid("typ", "the token is not a transaction token", nil)
	}
	if h.Alg != string(jose.ES256) {
		return h, invalid("algorithm", "the token must be signed with ES256", nil)
	}
	return h, nil
}
