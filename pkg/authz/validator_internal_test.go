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
	iss := authztest.NewIssuer(t)
	keys, err := NewKeyProvider(WithJWKSURL(iss.JWKSURL()))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(keys, WithIssuers(iss.Issuer()), WithAudiences(authztest.Audience), WithTokenCache(0))
	if err != nil {
		t.Fatal(err)
	}
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
