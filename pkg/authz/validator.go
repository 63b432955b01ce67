package authz

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/auth0/go-jwt-middleware/v2/validator"
	jose "github.com/go-jose/go-jose/v4"
	josev2 "gopkg.in/go-jose/go-jose.v2"
	jwtv2 "gopkg.in/go-jose/go-jose.v2/jwt"
)

// Validator verifies Auth0 access tokens (RS256 only).
//
// The signature, algorithm, issuer and audience checks of Validate are done
// by go-jwt-middleware's validator package; around it the Validator adds
// what that lacks: a required exp and the time checks it shares with
// TxnValidator (checkTimes), several issuers, kid-based key selection
// through the KeyProvider, refusal of crit and of key-bearing header fields
// (jku, x5u, jwk, x5c), typed claims, revocation and a verified-token cache.
type Validator struct {
	keys     *KeyProvider
	o        validatorOptions
	byIssuer map[string]*validator.Validator
	cache    *tokenCache
	headers  headerCache
}

type verifyKeyCtx struct{}

// libraryClockSkew is the clock skew go-jwt-middleware is given: so large
// that its own time checks (against time.Now, with exp optional) never
// decide. The one time check is checkTimes, with the validator's leeway and
// clock, for access and transaction tokens alike.
const libraryClockSkew = 100 * 365 * 24 * time.Hour

// NewValidator returns a Validator that takes keys from keys.
//
//	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(jwksURL))
//	v, err := authz.NewValidator(keys,
//		authz.WithIssuers("https://tenant.eu.auth0.com/"),
//		authz.WithAudiences("https://api.authmesh.dev"))
func NewValidator(keys *KeyProvider, opts ...Option) (*Validator, error) {
	o, err := newValidatorOptions(opts)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, errors.New("authz: nil key provider")
	}
	if keys.o.alg != jose.RS256 {
		return nil, errors.New("authz: access tokens are RS256: the key provider must serve RS256 keys")
	}
	v := &Validator{keys: keys, o: o, byIssuer: make(map[string]*validator.Validator, len(o.issuers))}
	// The key was chosen by kid before go-jwt-middleware runs; it only has to
	// hand it back. Its own JWKS handling is exactly what we replace.
	keyFunc := func(ctx context.Context) (any, error) {
		k, ok := ctx.Value(verifyKeyCtx{}).(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("authz: no verification key in context")
		}
		return k, nil
	}
	for _, iss := range o.issuers {
		jv, err := validator.New(keyFunc, validator.RS256, iss, o.audiences,
			validator.WithAllowedClockSkew(libraryClockSkew))
		if err != nil {
			return nil, fmt.Errorf("authz: %w", err)
		}
		v.byIssuer[iss] = jv
	}
	if o.cacheSize > 0 {
		v.cache = newTokenCache(o.cacheSize)
	}
	return v, nil
}

// Keys returns the key provider (for readiness and metrics).
func (v *Validator) Keys() *KeyProvider { return v.keys }

// Validate verifies token now and returns its claims, or an *Error
// (CodeInvalidToken, or CodeKeysUnavailable when no keys can be had).
//
// The returned Claims may be shared between requests presenting the same
// token: treat them as read-only.
func (v *Validator) Validate(ctx context.Context, token string) (*Claims, error) {
	if err := checkPresented(token); err != nil {
		return nil, err
	}
	now := v.o.now()
	var sum [32]byte
	if v.cache != nil {
		sum = tokenHash(token)
		if c, ok := v.cache.get(sum, now); ok {
			// A cached token stays good only while its key is still published.
			if v.keys.hasKey(c.KeyID, now) {
				v.o.metrics.cacheLookup(true)
				recordTokenCacheHit(ctx)
				if err := checkRevoked(&v.o, c, time.Time{}); err != nil {
					return nil, err
				}
				return c, nil
			}
			v.cache.remove(sum)
		}
		v.o.metrics.cacheLookup(false)
	}
	c, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if err := checkRevoked(&v.o, c, time.Time{}); err != nil {
		return nil, err
	}
	if v.cache != nil {
		c.tokenSum, c.summed, c.subHash = sum, true, SubjectHash(c.Subject)
		v.cache.put(sum, c)
	}
	return c, nil
}

func (v *Validator) verify(ctx context.Context, token string, now time.Time) (*Claims, error) {
	h, err := v.headers.parse(token)
	if err != nil {
		return nil, err
	}
	if err := checkType(h.Typ, v.o.typ); err != nil {
		return nil, err
	}
	iss := v.o.issuers[0]
	if len(v.o.issuers) > 1 {
		if iss, err = peekIssuer(token); err != nil {
			return nil, err
		}
	}
	jv, ok := v.byIssuer[iss]
	if !ok {
		return nil, invalid("issuer", "the token has an unexpected issuer", nil)
	}
	key, err := v.keys.key(ctx, h.Kid)
	if err != nil {
		return nil, err
	}
	res, err := jv.ValidateToken(context.WithValue(ctx, verifyKeyCtx{}, key), token)
	if err != nil {
		return nil, classify(err)
	}
	vc, ok := res.(*validator.ValidatedClaims)
	if !ok {
		return nil, invalid("malformed", "the token could not be read", nil)
	}
	rc := vc.RegisteredClaims
	if err := checkTimes(unixOrZero(rc.Expiry), unixOrZero(rc.NotBefore), unixOrZero(rc.IssuedAt), now, v.o.leeway); err != nil {
		return nil, err
	}
	// The other claims are decoded here rather than by go-jose through
	// go-jwt-middleware's custom claims, which would scan the payload twice
	// more before handing it over: one fast pass instead (UnmarshalJSON).
	tc := &tokenClaims{rolesClaim: v.o.rolesClaim}
	if err := decodePayload(token, tc); err != nil {
		return nil, err
	}
	return tc.claims(rc.Subject, rc.Issuer, rc.Audience, rc.IssuedAt, rc.Expiry, h.Kid), nil
}

// classify maps go-jwt-middleware's errors to reasons by the typed errors of
// go-jose v2 it wraps (%w all the way). Times never fail there (see
// libraryClockSkew), and the algorithm, the header and the token's shape are
// checked before it runs, so what is left is issuer, audience, signature,
// and payloads go-jose cannot read. Descriptions are fixed strings: library
// messages can quote token content.
func classify(err error) *Error {
	switch {
	case errors.Is(err, jwtv2.ErrInvalidIssuer):
		return invalid("issuer", "the token has an unexpected issuer", err)
	case errors.Is(err, jwtv2.ErrInvalidAudience):
		return invalid("audience", "the token is not meant for this API", err)
	case errors.Is(err, josev2.ErrCryptoFailure):
		return invalid("bad_signature", "the token signature is invalid", err)
	default:
		return invalid("malformed", "the token could not be read", err)
	}
}

func unixOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

// checkTimes is the one time check of both validators: exp (required), nbf
// and iat (optional) as of at, each with the leeway.
func checkTimes(exp, nbf, iat, at time.Time, leeway time.Duration) error {
	if exp.IsZero() {
		return invalid("missing_exp", "the token has no expiry", nil)
	}
	if !at.Add(-leeway).Before(exp) {
		return invalid("expired", "the token has expired", nil)
	}
	if !nbf.IsZero() && at.Add(leeway).Before(nbf) {
		return invalid("not_yet_valid", "the token is not valid yet", nil)
	}
	if !iat.IsZero() && at.Add(leeway).Before(iat) {
		return invalid("issued_in_future", "the token was issued in the future", nil)
	}
	return nil
}
