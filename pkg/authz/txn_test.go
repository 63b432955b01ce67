package authz_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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

// TestTxnValidatorAttacks runs authztest's transaction-token attacks (the
// tenant's access tokens among them) against the TxnValidator, live and as
// of a stored time: each is refused with its reason, never quoted. The
// natsauth service and consumer run the same corpus.
func TestTxnValidatorAttacks(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts)
	now := time.Now()
	if _, err := v.Validate(context.Background(), tts.Token(t, "auth0|alice", "read:profile", nil)); err != nil {
		t.Fatalf("the service's own token: %v", err)
	}
	for _, tc := range authztest.TxnTokenAttacks(t, tts, authztest.NewIssuer(t)) {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			for entry, validate := range map[string]func() error{
				"Validate":   func() error { _, err := v.Validate(context.Background(), tc.Token); return err },
				"ValidateAt": func() error { _, err := v.ValidateAt(context.Background(), tc.Token, now); return err },
			} {
				err := validate()
				var ae *authz.Error
				if !errors.As(err, &ae) || ae.Code != authz.CodeInvalidToken || ae.Reason != tc.Reason {
					t.Fatalf("%s: %v, want invalid_token (%s)", entry, err, tc.Reason)
				}
				if strings.Contains(err.Error(), tc.Token) {
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
