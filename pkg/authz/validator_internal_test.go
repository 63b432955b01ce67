package authz

import (
	"context"
	"errors"
	"testing"
	"time"

	josev2 "gopkg.in/go-jose/go-jose.v2"
	jwtv2 "gopkg.in/go-jose/go-jose.v2/jwt"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestAccessTokenTimesCheckedOnce: the access-token Validator's time checks
// are checkTimes's, on the validator's clock, not go-jwt-middleware's on the
// wall clock: with the validator's clock two hours back, a token that expired
// an hour ago is good and one issued now is from the future.
func TestAccessTokenTimesCheckedOnce(t *testing.T) {
	t.Parallel()
	iss, v := issuerValidator(t, WithTokenCache(0))
	wall := time.Now()
	v.o.now = func() time.Time { return wall.Add(-2 * time.Hour) }
	old := iss.Token(t, authztest.Claims{"iat": wall.Add(-3 * time.Hour).Unix(), "exp": wall.Add(-time.Hour).Unix()})
	if _, err := v.Validate(context.Background(), old); err != nil {
		t.Errorf("token valid on the validator's clock: %v", err)
	}
	var ae *Error
	if _, err := v.Validate(context.Background(), iss.Token(t, nil)); !errors.As(err, &ae) || ae.Reason != "issued_in_future" {
		t.Errorf("token issued after the validator's clock: %v, want issued_in_future", err)
	}
}

// TestClassify: go-jwt-middleware's failures are told apart by the typed
// errors it wraps, never by their text.
func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{jwtv2.ErrInvalidIssuer, "issuer"},
		{jwtv2.ErrInvalidAudience, "audience"},
		{josev2.ErrCryptoFailure, "bad_signature"},
		{errors.New("anything else"), "malformed"},
	} {
		wrapped := errors.Join(errors.New("expected claims not validated"), tc.err)
		if got := classify(wrapped).Reason; got != tc.reason {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.reason)
		}
	}
}

// TestCachedClaimsSubjectHash: claims the validator caches carry their
// subject's hash, taken once; uncached claims hash on each call, the same.
func TestCachedClaimsSubjectHash(t *testing.T) {
	t.Parallel()
	iss, v := issuerValidator(t)
	tok := iss.Token(t, authztest.Claims{"sub": "auth0|0123456789abcdef01234567"})
	c, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	want := SubjectHash("auth0|0123456789abcdef01234567")
	if again != c || c.subHash != want || c.SubjectHash() != want {
		t.Errorf("cached claims: same %v, subHash %q, SubjectHash() %q; want %q", again == c, c.subHash, c.SubjectHash(), want)
	}
	if plain := (&Claims{Subject: "auth0|0123456789abcdef01234567"}); plain.SubjectHash() != want {
		t.Errorf("uncached claims: SubjectHash() %q, want %q", plain.SubjectHash(), want)
	}
}

// issuerValidator is a test issuer and a Validator of its tokens, with opts.
func issuerValidator(t *testing.T, opts ...Option) (*authztest.Issuer, *Validator) {
	t.Helper()
	iss := authztest.NewIssuer(t)
	keys, err := NewKeyProvider(WithJWKSURL(iss.JWKSURL()))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(keys, append([]Option{WithIssuers(iss.Issuer()), WithAudiences(authztest.Audience)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return iss, v
}
