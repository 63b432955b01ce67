package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

func newTxnValidator(t *testing.T, tts *authztest.TxnIssuer, opts ...authz.Option) *authz.TxnValidator {
	t.Helper()
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(tts.JWKSURL()), authz.WithAlgorithm("ES256"),
		authz.WithRefetchCooldown(0))
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]authz.Option{authz.WithIssuers(tts.Issuer), authz.WithAudiences(tts.TrustDomain)}, opts...)
	v, err := authz.NewTxnValidator(keys, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTxnValidatorAccepts(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts)
	tok := tts.Token(t, "auth0|alice", "read:profile cancel:orders", authztest.Claims{"txn": "req-1", "tctx": map[string]any{"order_id": "o1"}})
	c, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "auth0|alice" || c.Txn != "req-1" || c.RequestingWorkload != "orders-service" || c.IsM2M() || !c.IsTxn() {
		t.Fatalf("claims %+v", c)
	}
	if !c.HasPermission("read:profile") || !c.HasScope("cancel:orders") || c.HasPermission("create:orders") {
		t.Fatalf("scope mapped wrong: %v %v", c.Permissions, c.Scopes.List())
	}
	if !strings.Contains(string(c.TxnContext), `"o1"`) {
		t.Fatalf("tctx %s", c.TxnContext)
	}
	// A service's own transaction is an M2M identity for the policies.
	svc, err := v.Validate(context.Background(), tts.Token(t, "orders-service@clients", "cancel:orders", nil))
	if err != nil {
		t.Fatal(err)
	}
	if !svc.IsM2M() || svc.AZP != "orders-service" {
		t.Fatalf("service claims %+v", svc)
	}
	if err := authz.RequireAll("cancel:orders").Clients("orders-service").Authorize(svc); err != nil {
		t.Fatalf("policy: %v", err)
	}
}

// TestTxnValidatorAttacks: everything that is not a transaction token of
// this mesh's service is refused, access tokens of the tenant included.
func TestTxnValidatorAttacks(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts)
	tenant := authztest.NewIssuer(t)
	now := time.Now()
	valid := func(over authztest.Claims) authztest.Claims {
		c := authztest.Claims{"iss": tts.Issuer, "aud": tts.TrustDomain, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
			"txn": "t1", "sub": "auth0|alice", "scope": "read:profile", "req_wl": "orders-service"}
		return c.With(over)
	}
	foreign := authztest.NewECKey(t)
	event := authz.NewEventBinding("orders.events.created", []byte(`{"id":"e1"}`))
	for name, tok := range map[string]string{
		"tenant access token":  tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile"}}),
		"tenant M2M token":     tenant.M2MToken(t, "orders-service", "cancel:orders"),
		"wrong typ":            signWith(t, tts, "JWT", valid(nil)),
		"no typ":               signWith(t, tts, "", valid(nil)),
		"foreign key same kid": authztest.SignJWS(t, jose.JSONWebKey{Key: foreign.Key, KeyID: currentKid(t, tts), Algorithm: "ES256"}, map[string]any{"typ": authz.TxnTokenType}, valid(nil)),
		"wrong audience":       tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"aud": "https://api.authmesh.dev"}),
		"wrong issuer":         tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"iss": "http://localhost:8400/"}),
		"expired":              tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"iat": now.Add(-10 * time.Minute).Unix(), "exp": now.Add(-time.Minute).Unix()}),
		"too long lived":       tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"exp": now.Add(2 * time.Hour).Unix()}),
		"event-bound, too long lived": tts.Token(t, "auth0|alice", "create:orders", authztest.Claims{"exp": now.Add(25 * time.Hour).Unix(),
			"tctx": authz.TxnContext{Event: &event}}),
		"event binding without a digest": tts.Token(t, "auth0|alice", "create:orders", authztest.Claims{
			"tctx": authz.TxnContext{Event: &authz.EventBinding{Subject: "orders.events.created"}}}),
		"event binding with a short digest": tts.Token(t, "auth0|alice", "create:orders", authztest.Claims{
			"tctx": authz.TxnContext{Event: &authz.EventBinding{Subject: "orders.events.created", SHA256: "AAAA"}}}),
		"no scope":     tts.Token(t, "auth0|alice", "", nil),
		"no txn":       tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"txn": nil}),
		"no req_wl":    tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"req_wl": nil}),
		"no iat":       tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"iat": nil}),
		"alg none":     authztest.Encode(t, map[string]any{"alg": "none", "typ": authz.TxnTokenType, "kid": currentKid(t, tts)}) + "." + authztest.Encode(t, valid(nil)) + ".",
		"embedded jwk": signWithHeader(t, tts, map[string]any{"typ": authz.TxnTokenType, "jwk": map[string]any{"kty": "EC"}}, valid(nil)),
		"garbage":      "not.a.token",
	} {
		t.Run(name, func(t *testing.T) {
			for entry, validate := range map[string]func() error{
				"Validate":   func() error { _, err := v.Validate(context.Background(), tok); return err },
				"ValidateAt": func() error { _, err := v.ValidateAt(context.Background(), tok, now); return err },
			} {
				err := validate()
				if !errors.Is(err, authz.ErrInvalidToken) {
					t.Fatalf("%s: want invalid_token, got %v", entry, err)
				}
				if strings.Contains(err.Error(), tok) && tok != "" {
					t.Fatalf("%s: the error quotes the token", entry)
				}
			}
		})
	}
}

// TestTxnValidatorEventBinding: a token bound to one event may live up to a
// day (it waits in an outbox), and its claims name the event; it matches
// that subject and those bytes only.
func TestTxnValidatorEventBinding(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts)
	payload := []byte(`{"id":"e1","data":{"total_cents":100}}`)
	event := authz.NewEventBinding("orders.events.created", payload)
	tok := tts.Token(t, "auth0|alice", "create:orders", authztest.Claims{"exp": time.Now().Add(23 * time.Hour).Unix(),
		"tctx": authz.TxnContext{AZP: "spa", Event: &event}})
	c, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Event == nil || *c.Event != event {
		t.Fatalf("event %+v, want %+v", c.Event, event)
	}
	for _, tc := range []struct {
		subject string
		payload []byte
		want    bool
	}{
		{"orders.events.created", payload, true},
		{"orders.events.cancelled", payload, false},
		{"orders.events.created", []byte(`{"id":"e1","data":{"total_cents":1}}`), false},
		{"orders.events.created", append(payload, ' '), false},
	} {
		if got := c.Event.Matches(tc.subject, tc.payload); got != tc.want {
			t.Errorf("Matches(%s, %s) = %v, want %v", tc.subject, tc.payload, got, tc.want)
		}
	}
}

func TestTxnValidatorStoredTimeAndRotation(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts)
	issued := time.Now().Add(-20 * time.Minute)
	tok := tts.Token(t, "auth0|alice", "create:orders", authztest.Claims{"iat": issued.Unix(), "exp": issued.Add(5 * time.Minute).Unix()})
	// Expired now, but the message was stored while it was valid.
	if _, err := v.Validate(context.Background(), tok); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("expired token accepted now: %v", err)
	}
	if _, err := v.ValidateAt(context.Background(), tok, issued.Add(time.Minute)); err != nil {
		t.Fatalf("as of its stored time: %v", err)
	}
	// Stored after it expired: a replay, refused.
	if _, err := v.ValidateAt(context.Background(), tok, issued.Add(10*time.Minute)); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("stored after exp: %v", err)
	}
	// The service rotates its key: the old key leaves the JWKS. Messages
	// stored before still verify; a live request with the old key does not.
	fresh := tts.Token(t, "auth0|alice", "create:orders", nil)
	if _, err := v.Validate(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	tts.Rotate(t)
	newer := tts.Token(t, "auth0|alice", "create:orders", nil)
	if _, err := v.Validate(context.Background(), newer); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if _, err := v.ValidateAt(context.Background(), fresh, time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("message stored before the rotation: %v", err)
	}
	if _, err := v.ValidateAt(context.Background(), fresh, time.Now().Add(time.Second)); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("old key after its removal: %v", err)
	}
}

// TestTxnValidatorCachedChecksEachTime: a token verified once is still held
// against each call's instant: iat and exp as of at, and the revocation as
// of at; a live request after its user was blocked is refused.
func TestTxnValidatorCachedChecksEachTime(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	rev := &authztest.Revocations{}
	v := newTxnValidator(t, tts, authz.WithRevocations(rev))
	now := time.Now().Truncate(time.Second)
	tok := tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(5 * time.Minute).Unix()})
	for range 2 { // the first call verifies, the second is served from the cache
		if _, err := v.ValidateAt(ctxT(t), tok, now); err != nil {
			t.Fatal(err)
		}
	}
	for name, at := range map[string]time.Time{
		"before iat": now.Add(-time.Hour),
		"after exp":  now.Add(time.Hour),
	} {
		if _, err := v.ValidateAt(ctxT(t), tok, at); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("%s: err = %v, want invalid_token", name, err)
		}
	}
	rev.Revoke("auth0|alice", now.Add(-time.Second))
	if _, err := v.ValidateAt(ctxT(t), tok, now); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("stored after the revocation: err = %v, want revoked", err)
	}
	if _, err := v.Validate(ctxT(t), tok); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("a blocked user's cached token, live: err = %v, want revoked", err)
	}
	if _, err := v.ValidateAt(ctxT(t), tok, now.Add(-2*time.Second)); err != nil {
		t.Errorf("stored before the revocation: %v", err)
	}
}

// TestTxnValidatorSparesEventsStoredBefore: an event the log stored before
// its user was blocked was published while the token was good, and one
// sealed before the block was caused while it was; both must still be
// accepted, or the block strands them (an invoice paid, its order never
// told). A live request with the same token is refused.
func TestTxnValidatorSparesEventsStoredBefore(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	revokedAt := time.Now().Truncate(time.Second)
	rev := &authztest.Revocations{}
	rev.Revoke("auth0|alice", revokedAt)
	v := newTxnValidator(t, tts, authz.WithRevocations(rev))
	tok := tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"iat": revokedAt.Add(-time.Minute).Unix()})
	if _, err := v.ValidateAt(ctxT(t), tok, revokedAt.Add(-time.Millisecond)); err != nil {
		t.Errorf("stored just before the block: %v", err)
	}
	for _, at := range []time.Time{revokedAt, revokedAt.Add(time.Minute)} {
		if _, err := v.ValidateAt(ctxT(t), tok, at); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("stored at %v (block at %v): err = %v, want revoked", at, revokedAt, err)
		}
	}
	if _, err := v.Validate(ctxT(t), tok); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("Validate now: err = %v, want revoked", err)
	}

	// An event sealed before the block records what the user did while
	// they could; its relay may store it after the block (an outage
	// outlasted it). A token sealed in or after the block's second (the TTS
	// would not seal one), an unbound token stored after the block, and a
	// bound token used live are refused.
	event := authz.NewEventBinding("billing.events.invoice.paid", []byte(`{"id":"e1"}`))
	sealed := func(iat time.Time) string {
		return tts.Token(t, "auth0|alice", "pay:invoices", authztest.Claims{"iat": iat.Unix(), "exp": iat.Add(time.Hour).Unix(),
			"tctx": authz.TxnContext{Event: &event}})
	}
	later := revokedAt.Add(10 * time.Minute)
	if _, err := v.ValidateAt(ctxT(t), sealed(revokedAt.Add(-time.Minute)), later); err != nil {
		t.Errorf("sealed before the block, stored after it: %v", err)
	}
	for name, tok := range map[string]string{
		"sealed in the block's second": sealed(revokedAt),
		"sealed after the block":       sealed(revokedAt.Add(time.Second)),
		"unbound, issued before":       tts.Token(t, "auth0|alice", "pay:invoices", authztest.Claims{"iat": revokedAt.Add(-time.Minute).Unix()}),
	} {
		if _, err := v.ValidateAt(ctxT(t), tok, later); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("%s, stored after the block: err = %v, want revoked", name, err)
		}
	}
	if _, err := v.Validate(ctxT(t), sealed(revokedAt.Add(-time.Minute))); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("a bound token used live after the block: err = %v, want revoked", err)
	}
}

// TestTxnValidatorFailsClosedUntilLoaded: as the access-token Validator, a
// TxnValidator whose revocation list is still loading refuses every token
// as unavailable, live or stored, cached or not.
func TestTxnValidatorFailsClosedUntilLoaded(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	rev := &loadingRevocations{}
	rev.ready.Store(true)
	v := newTxnValidator(t, tts, authz.WithRevocations(rev))
	tok := tts.Token(t, "auth0|alice", "read:profile", nil)
	if _, err := v.Validate(ctxT(t), tok); err != nil {
		t.Fatal(err) // cached from here on
	}
	rev.ready.Store(false)
	for name, fn := range map[string]func() error{
		"Validate":   func() error { _, err := v.Validate(ctxT(t), tok); return err },
		"ValidateAt": func() error { _, err := v.ValidateAt(ctxT(t), tok, time.Now()); return err },
		"uncached": func() error {
			_, err := v.Validate(ctxT(t), tts.Token(t, "auth0|bob", "read:profile", nil))
			return err
		},
	} {
		var ae *authz.Error
		if err := fn(); !errors.Is(err, authz.ErrKeysUnavailable) || !errors.As(err, &ae) || ae.Reason != "revocations_unavailable" {
			t.Errorf("%s while loading: err = %v, want keys_unavailable (revocations_unavailable)", name, err)
		}
	}
	rev.ready.Store(true)
	if _, err := v.ValidateAt(ctxT(t), tok, time.Now()); err != nil {
		t.Errorf("once loaded: %v", err)
	}
}

func TestAccessValidatorRefusesTxnTokens(t *testing.T) {
	t.Parallel()
	tenant := authztest.NewIssuer(t)
	v := newValidator(t, tenant, nil)
	tts := authztest.NewTxnIssuer(t)
	for name, tok := range map[string]string{
		"txn token":                  tts.Token(t, "auth0|alice", "read:profile", nil),
		"txn token with API aud":     tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"aud": authztest.Audience, "iss": tenant.Issuer()}),
		"tenant-signed txn typ":      authztest.Sign(t, tenant.SigningKey().Private, map[string]any{"alg": "RS256", "typ": authz.TxnTokenType, "kid": tenant.SigningKey().ID}, tenant.DefaultClaims()),
		"tenant-signed txn typ full": authztest.Sign(t, tenant.SigningKey().Private, map[string]any{"alg": "RS256", "typ": "application/txntoken+jwt", "kid": tenant.SigningKey().ID}, tenant.DefaultClaims()),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Validate(context.Background(), tok); !errors.Is(err, authz.ErrInvalidToken) {
				t.Fatalf("HTTP validator accepted a transaction token: %v", err)
			}
		})
	}
}

func currentKid(t *testing.T, tts *authztest.TxnIssuer) string {
	t.Helper()
	tok := tts.Token(t, "x", "y", nil)
	h, _, _ := strings.Cut(tok, ".")
	var hdr struct {
		Kid string `json:"kid"`
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil || json.Unmarshal(raw, &hdr) != nil {
		t.Fatalf("header %q", h)
	}
	return hdr.Kid
}

func signWith(t *testing.T, tts *authztest.TxnIssuer, typ string, c authztest.Claims) string {
	hdr := map[string]any{}
	if typ != "" {
		hdr["typ"] = typ
	}
	return signWithHeader(t, tts, hdr, c)
}

func signWithHeader(t *testing.T, tts *authztest.TxnIssuer, hdr map[string]any, c authztest.Claims) string {
	t.Helper()
	return authztest.SignJWS(t, tts.SigningKey(), hdr, c)
}
