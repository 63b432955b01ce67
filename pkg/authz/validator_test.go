package authz_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// attack is a token that must be refused, with the reason the access-token
// Validator gives.
type attack struct{ name, token, reason string }

// accessTokenAttacks are forged, tampered, misdirected and malformed access
// tokens of iss's tenant.
func accessTokenAttacks(t *testing.T, iss *authztest.Issuer) []attack {
	k := iss.SigningKey()
	attacker := authztest.AttackerKey(t, k.Private)
	hdr := func(extra map[string]any) map[string]any {
		return authztest.Claims{"alg": "RS256", "typ": "JWT", "kid": k.ID}.With(extra)
	}
	claims := func(extra authztest.Claims) authztest.Claims {
		return iss.DefaultClaims().With(extra)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	// HS256 with the RSA public key (as its PEM/JWK modulus bytes) as the secret.
	hsToken := func() string {
		in := authztest.Encode(t, hdr(map[string]any{"alg": "HS256"})) + "." + authztest.Encode(t, claims(nil))
		mac := hmac.New(sha256.New, k.Private.PublicKey.N.Bytes())
		mac.Write([]byte(in))
		return in + "." + b64(mac.Sum(nil))
	}
	attackerJWK := authztest.PublicJWK(&authztest.Key{ID: k.ID, Private: attacker})
	now := time.Now()
	good := iss.Token(t, nil)
	parts := strings.Split(good, ".")
	return []attack{
		{"alg none", authztest.Encode(t, hdr(map[string]any{"alg": "none"})) + "." + authztest.Encode(t, claims(nil)) + ".", "algorithm"},
		{"HS256 with public key as secret", hsToken(), "algorithm"},
		{"foreign key under known kid", authztest.Sign(t, attacker, hdr(nil), claims(nil)), "bad_signature"},
		{"unknown kid", authztest.Sign(t, attacker, hdr(map[string]any{"kid": "nope"}), claims(nil)), "unknown_kid"},
		{"no kid", authztest.Sign(t, k.Private, hdr(map[string]any{"kid": nil}), claims(nil)), "missing_kid"},
		{"expired", iss.Token(t, authztest.Claims{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()}), "expired"},
		{"nbf in the future", iss.Token(t, authztest.Claims{"nbf": now.Add(time.Hour).Unix()}), "not_yet_valid"},
		{"iat in the future", iss.Token(t, authztest.Claims{"iat": now.Add(time.Hour).Unix()}), "issued_in_future"},
		{"missing exp", iss.Token(t, authztest.Claims{"exp": nil}), "missing_exp"},
		{"wrong issuer", iss.Token(t, authztest.Claims{"iss": "https://evil.example/"}), "issuer"},
		{"issuer without trailing slash", iss.Token(t, authztest.Claims{"iss": strings.TrimSuffix(iss.Issuer(), "/")}), "issuer"},
		{"wrong audience", iss.Token(t, authztest.Claims{"aud": "https://other.api"}), "audience"},
		{"wrong audience array", iss.Token(t, authztest.Claims{"aud": []string{"https://other.api", iss.Issuer() + "userinfo"}}), "audience"},
		{"jku to attacker", authztest.Sign(t, attacker, hdr(map[string]any{"jku": "https://evil.example/jwks.json"}), claims(nil)), "key_in_header"},
		{"x5u to attacker", authztest.Sign(t, attacker, hdr(map[string]any{"x5u": "https://evil.example/cert.pem"}), claims(nil)), "key_in_header"},
		{"embedded jwk", authztest.Sign(t, attacker, hdr(map[string]any{"jwk": attackerJWK}), claims(nil)), "key_in_header"},
		{"embedded x5c", authztest.Sign(t, attacker, hdr(map[string]any{"x5c": []string{"MIIB"}}), claims(nil)), "key_in_header"},
		{"crit header", authztest.Sign(t, k.Private, hdr(map[string]any{"crit": []string{"exp"}, "exp": 1}), claims(nil)), "crit_header"},
		{"two segments", parts[0] + "." + parts[1], "malformed"},
		{"four segments", good + ".x", "malformed"},
		{"bad base64 header", "%%%." + parts[1] + "." + parts[2], "malformed"},
		{"bad base64 payload", parts[0] + ".!!!." + parts[2], "malformed"},
		{"bad base64 signature", parts[0] + "." + parts[1] + ".***", "malformed"},
		{"header not JSON", b64([]byte("not json")) + "." + parts[1] + "." + parts[2], "malformed"},
		{"claims not JSON", authztest.Sign(t, k.Private, hdr(nil), []byte("not json")), "malformed"},
		{"claims JSON array", authztest.Sign(t, k.Private, hdr(nil), []byte("[1,2]")), "malformed"},
		{"permissions wrong type", iss.Token(t, authztest.Claims{"permissions": "read:profile"}), "malformed"},
		{"exp wrong type", iss.Token(t, authztest.Claims{"exp": "tomorrow"}), "malformed"},
		{"tampered payload", parts[0] + "." + authztest.Encode(t, claims(authztest.Claims{"permissions": []string{"block:users"}})) + "." + parts[2], "bad_signature"},
		{"typ id_token-ish", authztest.Sign(t, k.Private, hdr(map[string]any{"typ": "dpop+jwt"}), claims(nil)), "typ"},
		{"1 MB token", parts[0] + "." + strings.Repeat("A", 1<<20) + "." + parts[2], "too_large"},
	}
}

// TestValidateAttackCorpus runs the attack table against every entry point:
// the access-token Validator (with the reason), the Echo middleware, and the
// TxnValidator live and as of a stored time (an access token, forged or not,
// is never a transaction token).
func TestValidateAttackCorpus(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	e, _ := newEcho(t, v)
	txn := newTxnValidator(t, authztest.NewTxnIssuer(t))
	for _, tc := range accessTokenAttacks(t, iss) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for name, validate := range map[string]func() error{
				"TxnValidator.Validate":   func() error { _, err := txn.Validate(context.Background(), tc.token); return err },
				"TxnValidator.ValidateAt": func() error { _, err := txn.ValidateAt(context.Background(), tc.token, time.Now()); return err },
			} {
				if err := validate(); !errors.Is(err, authz.ErrInvalidToken) {
					t.Errorf("%s error = %v, want invalid_token", name, err)
				}
			}
			_, err := v.Validate(context.Background(), tc.token)
			var ae *authz.Error
			if !errors.As(err, &ae) || ae.Code != authz.CodeInvalidToken {
				t.Fatalf("Validate error = %v, want invalid_token", err)
			}
			if ae.Reason != tc.reason {
				t.Errorf("reason = %q, want %q (%v)", ae.Reason, tc.reason, err)
			}
			rec := do(e, "GET", "/v1/me", tc.token)
			if rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("HTTP %d %q, want 401 invalid_token", rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), tc.token) {
				t.Error("body echoes the token")
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
