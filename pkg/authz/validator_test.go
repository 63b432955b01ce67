package authz_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestValidateAttackCorpus runs authztest's access-token attacks against
// this package's entry points: the access-token Validator (with the
// reason), the Echo middleware (Bearer, and DPoP with a good proof), and the
// TxnValidator live and as of a stored time (an access token, forged or
// not, is never a transaction token). The auth callout and the TTS run the
// same corpus in their packages.
func TestValidateAttackCorpus(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	e, _ := newEcho(t, v)
	txn := newTxnValidator(t, authztest.NewTxnIssuer(t))
	dp := dpopReplica(t, iss, nil, authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
	key := authztest.NewDPoPKey(t)
	// The control: the issuer's own token passes where the attacks fail.
	if _, err := v.Validate(context.Background(), iss.Token(t, nil)); err != nil {
		t.Fatalf("Validate refused the issuer's token: %v", err)
	}
	if rec := do(e, "GET", "/v1/me", iss.Token(t, nil)); rec.Code != 200 {
		t.Fatalf("HTTP %d for the issuer's token", rec.Code)
	}
	for _, tc := range authztest.AccessTokenAttacks(t, iss) {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			for name, validate := range map[string]func() error{
				"TxnValidator.Validate":   func() error { _, err := txn.Validate(context.Background(), tc.Token); return err },
				"TxnValidator.ValidateAt": func() error { _, err := txn.ValidateAt(context.Background(), tc.Token, time.Now()); return err },
			} {
				if err := validate(); !errors.Is(err, authz.ErrInvalidToken) {
					t.Errorf("%s error = %v, want invalid_token", name, err)
				}
			}
			_, err := v.Validate(context.Background(), tc.Token)
			var ae *authz.Error
			if !errors.As(err, &ae) || ae.Code != authz.CodeInvalidToken {
				t.Fatalf("Validate error = %v, want invalid_token", err)
			}
			if ae.Reason != tc.Reason {
				t.Errorf("reason = %q, want %q (%v)", ae.Reason, tc.Reason, err)
			}
			rec := do(e, "GET", "/v1/me", tc.Token)
			if rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("HTTP %d %q, want 401 invalid_token", rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), tc.Token) {
				t.Error("body echoes the token")
			}
			// With the DPoP scheme and a good proof for it, the token is
			// still what is refused.
			rec = dpopReq{auth: []string{"DPoP " + tc.Token}, proofs: []string{key.Proof(t, "GET", apiOrigin+"/v1/me", tc.Token)}}.send(dp)
			if rec.Code != 401 || !strings.Contains(challenges(rec), `error="invalid_token"`) || strings.Contains(rec.Body.String(), tc.Token) {
				t.Errorf("DPoP: HTTP %d %q, want 401 invalid_token", rec.Code, challenges(rec))
			}
		})
	}
}

func TestValidateClaims(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	tests := []struct {
		name  string
		token string
		check func(t *testing.T, c *authz.Claims)
	}{
		{"user token", iss.Token(t, authztest.Claims{"org_id": "org_1", "scope": "openid read:users"}), func(t *testing.T, c *authz.Claims) {
			if c.Subject != "auth0|6553da60a54af58e29493993" || c.IsM2M() || !c.HasPermission("read:profile") ||
				!c.HasRole("customer") || c.OrgID != "org_1" || c.AZP != "authmesh-cli" || !c.HasScope("read:users") ||
				c.KeyID != iss.SigningKey().ID || c.ExpiresAt.IsZero() || c.IssuedAt.IsZero() || len(c.Audience) != 2 {
				t.Errorf("claims = %+v", c)
			}
			// A user's scope never grants what permissions lack.
			if err := authz.RequireAll("read:users").Authorize(c); !errors.Is(err, authz.ErrInsufficientScope) {
				t.Errorf("Authorize = %v, want insufficient_scope", err)
			}
		}},
		{"m2m token, gty as array, string aud", iss.Token(t, authztest.Claims{"sub": "orders-service@clients", "azp": "orders-service", "gty": []string{"client-credentials"}, "scope": "read:profile", "permissions": nil, "aud": authztest.Audience}), func(t *testing.T, c *authz.Claims) {
			if !c.IsM2M() || !c.HasScope("read:profile") || len(c.GTY) != 1 {
				t.Errorf("claims = %+v", c)
			}
			if err := authz.RequireAll("read:profile").Clients("orders-service").Authorize(c); err != nil {
				t.Errorf("Authorize = %v", err)
			}
		}},
		{"rfc 9068 at+jwt with client_id", authztest.Sign(t, iss.SigningKey().Private, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": iss.SigningKey().ID}, func() authztest.Claims {
			c := iss.DefaultClaims()
			delete(c, "azp")
			c["client_id"] = "authmesh-web"
			c["jti"] = "x"
			return c
		}()), func(t *testing.T, c *authz.Claims) {
			if c.Client() != "authmesh-web" || c.ClientID != "authmesh-web" || c.AZP != "" || c.JTI != "x" {
				t.Errorf("Client() = %q, claims = %+v", c.Client(), c)
			}
		}},
		{"expired within leeway", iss.Token(t, authztest.Claims{"exp": time.Now().Add(-10 * time.Second).Unix()}), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Validate(context.Background(), tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestValidateSeveralIssuersAndRoles(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, nil, authz.WithIssuers("https://login.authmesh.dev/"), authz.WithRolesClaim("https://example.com/roles"))
	for _, is := range []string{iss.Issuer(), "https://login.authmesh.dev/"} {
		c, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"iss": is, "https://example.com/roles": []string{"admin"}}))
		if err != nil {
			t.Fatalf("issuer %s: %v", is, err)
		}
		if c.Issuer != is || !c.HasRole("admin") || c.HasRole("customer") {
			t.Errorf("claims = %+v", c)
		}
	}
	if _, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"iss": "https://other/"})); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("other issuer: %v", err)
	}
}

func TestRevocation(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	rev := &authztest.Revocations{}
	v := newValidator(t, iss, nil, authz.WithRevocations(rev)) // default leeway, 30 s
	now := time.Now().Truncate(time.Second)
	revokedAt := now.Add(-time.Minute).Add(500 * time.Millisecond)
	at := func(d time.Duration) authztest.Claims { return authztest.Claims{"iat": revokedAt.Add(d).Unix()} }
	before := iss.Token(t, at(-time.Minute))
	sameSecond := iss.Token(t, at(0))
	// The tenant's clock runs a few seconds ahead of the users service's:
	// this token was issued before the block although its iat is after it.
	aheadClock := iss.Token(t, at(5*time.Second))
	edgeOfLeeway := iss.Token(t, at(authz.DefaultLeeway))
	after := iss.Token(t, at(authz.DefaultLeeway+time.Second))
	other := iss.Token(t, authztest.Claims{"sub": "auth0|other", "iat": revokedAt.Add(-time.Minute).Unix()})
	// Cache the first token before the revocation: the cache must not bypass it.
	if _, err := v.Validate(ctxT(t), before); err != nil {
		t.Fatal(err)
	}
	rev.Revoke("auth0|6553da60a54af58e29493993", revokedAt)
	tests := []struct {
		name    string
		token   string
		revoked bool
	}{
		{"issued before (cached)", before, true},
		{"issued in the revocation's second", sameSecond, true},
		{"iat 5 s after the revocation, within the leeway", aheadClock, true},
		{"iat at the revocation plus the leeway", edgeOfLeeway, true},
		{"issued after the revocation plus the leeway", after, false},
		{"other subject", other, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Validate(ctxT(t), tc.token)
			var ae *authz.Error
			isRevoked := errors.As(err, &ae) && ae.Reason == "revoked"
			if isRevoked != tc.revoked || (!tc.revoked && err != nil) {
				t.Errorf("err = %v, want revoked=%v", err, tc.revoked)
			}
		})
	}
}

type liftedRevocations struct {
	authztest.Revocations
	lifted time.Time
}

func (r *liftedRevocations) LiftedAt(string) (time.Time, bool) { return r.lifted, !r.lifted.IsZero() }

// TestRevocationLifted: after an unblock (the lift), tokens issued from the
// lift on pass within the leeway; tokens issued before the lift, and any
// issued at or before the revocation, stay refused.
func TestRevocationLifted(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	now := time.Now().Truncate(time.Second)
	revokedAt := now.Add(-10 * time.Second)
	rev := &liftedRevocations{lifted: now.Add(-3 * time.Second)}
	rev.Revoke("auth0|6553da60a54af58e29493993", revokedAt)
	v := newValidator(t, iss, nil, authz.WithRevocations(rev))
	for _, tc := range []struct {
		name    string
		iat     time.Time
		revoked bool
	}{
		{"before the revocation", revokedAt.Add(-time.Second), true},
		{"after the revocation, before the lift", revokedAt.Add(2 * time.Second), true},
		{"at the lift", rev.lifted, false},
		{"after the lift", now, false},
	} {
		_, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"iat": tc.iat.Unix()}))
		var ae *authz.Error
		if isRevoked := errors.As(err, &ae) && ae.Reason == "revoked"; isRevoked != tc.revoked || (!tc.revoked && err != nil) {
			t.Errorf("%s: err = %v, want revoked=%v", tc.name, err, tc.revoked)
		}
	}
	// A lift older than the revocation (a later block) lifts nothing.
	rev.Revoke("auth0|6553da60a54af58e29493993", now.Add(-2*time.Second))
	if _, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"iat": now.Unix()})); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("a token within the leeway after a re-block, with an older lift: %v, want revoked", err)
	}
}

// loadingRevocations is a revocation list that is not loaded until ready is set.
type loadingRevocations struct {
	authztest.Revocations
	ready atomic.Bool
}

func (r *loadingRevocations) Ready() error {
	if !r.ready.Load() {
		return errors.New("not loaded")
	}
	return nil
}

// TestRevocationFailsClosedUntilLoaded: a validator whose revocation list is
// still loading cannot tell a blocked user's token from a good one, so it
// refuses every token as unavailable (503), also one it has cached, and
// accepts them once the list is there.
func TestRevocationFailsClosedUntilLoaded(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	rev := &loadingRevocations{}
	rev.ready.Store(true)
	v := newValidator(t, iss, nil, authz.WithRevocations(rev))
	tok := iss.Token(t, nil)
	if _, err := v.Validate(ctxT(t), tok); err != nil {
		t.Fatal(err) // cached from here on
	}
	rev.ready.Store(false)
	for name, fn := range map[string]func() error{
		"Validate": func() error { _, err := v.Validate(ctxT(t), tok); return err },
		"uncached": func() error {
			_, err := v.Validate(ctxT(t), iss.Token(t, authztest.Claims{"sub": "auth0|other"}))
			return err
		},
	} {
		var ae *authz.Error
		if err := fn(); !errors.Is(err, authz.ErrKeysUnavailable) || !errors.As(err, &ae) || ae.Reason != "revocations_unavailable" {
			t.Errorf("%s while loading: err = %v, want keys_unavailable (revocations_unavailable)", name, err)
		}
	}
	rev.ready.Store(true)
	if _, err := v.Validate(ctxT(t), tok); err != nil {
		t.Errorf("once loaded: %v", err)
	}
}
