package natsauth

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

// TestRevocationAcrossValidators: two validators (two "replicas", each with
// its own connection and watcher) reject a revoked user's token within 1 s,
// also when they had it cached; one started later rejects it before it is
// ready; unblocking does not bring old tokens back; newer tokens pass.
func TestRevocationAcrossValidators(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	iss := authztest.NewIssuer(t)
	ctx := t.Context()

	_, jsUsers := connect(t, ns)
	store := newRevocationStore(t, jsUsers)
	replica := func() (*authz.Validator, *RevocationWatcher) {
		_, js := connect(t, ns)
		w := startWatcher(t, ctx, js)
		return newValidator(t, iss, authz.WithRevocations(w)), w
	}
	v1, _ := replica()
	v2, _ := replica()

	old := iss.Token(t, authztest.Claims{"iat": time.Now().Add(-time.Minute).Unix()})
	for _, v := range []*authz.Validator{v1, v2} {
		if _, err := v.Validate(ctx, old); err != nil { // now cached
			t.Fatal(err)
		}
	}
	blockedAt := time.Now()
	if err := store.Revoke(ctx, userSub, blockedAt); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, v := range []*authz.Validator{v1, v2} {
		authztest.Eventually(t, time.Second-time.Since(start), func() bool {
			_, err := v.Validate(ctx, old)
			return authz.CodeOf(err) == authz.CodeInvalidToken
		}, "revocation seen by validator")
	}
	t.Logf("both validators saw the revocation after %v", time.Since(start))

	// A replica started after the block knows it once ready.
	v3, w3 := replica()
	if _, ok := w3.RevokedAt(userSub); !ok {
		t.Fatal("late watcher missed the revocation")
	}
	if _, err := v3.Validate(ctx, old); authz.CodeOf(err) != authz.CodeInvalidToken {
		t.Fatalf("late replica accepts revoked token: %v", err)
	}

	// An earlier revocation does not move the instant back.
	if err := store.Revoke(ctx, userSub, blockedAt.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	kv, _ := jsUsers.KeyValue(ctx, RevocationBucket)
	entry, err := kv.Get(ctx, RevocationKey(userSub))
	if err != nil {
		t.Fatal(err)
	}
	var rec Revocation
	if err := json.Unmarshal(entry.Value(), &rec); err != nil || rec.Subject != userSub || !rec.RevokedAt.Equal(blockedAt.UTC()) {
		t.Fatalf("stored %s (%v)", entry.Value(), err)
	}

	// A token whose iat is a few seconds after the block, within the
	// validators' leeway, may come from a tenant whose clock runs ahead: it
	// is refused until the subject is unblocked.
	fresh := iss.Token(t, authztest.Claims{"iat": blockedAt.Add(2 * time.Second).Unix()})
	if _, err := v1.Validate(ctx, fresh); authz.CodeOf(err) != authz.CodeInvalidToken {
		t.Fatalf("token with iat within the leeway after the block: %v, want revoked", err)
	}

	// Unblocked: the lift, taken before the tenant unblocks, lets tokens
	// issued from then on through; the old token stays dead, and so does
	// one issued between the block and the lift.
	liftedAt := blockedAt.Add(2 * time.Second)
	if err := store.Lift(ctx, userSub, liftedAt); err != nil {
		t.Fatal(err)
	}
	between := iss.Token(t, authztest.Claims{"iat": blockedAt.Add(time.Second).Unix()})
	for i, v := range []*authz.Validator{v1, v2, v3} {
		authztest.Eventually(t, time.Second, func() bool { _, err := v.Validate(ctx, fresh); return err == nil }, "lift seen by validator")
		if _, err := v.Validate(ctx, old); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("validator %d: old token came back", i+1)
		}
		if _, err := v.Validate(ctx, between); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("validator %d: a token issued between block and lift passes: %v", i+1, err)
		}
	}
	// A later block supersedes the lift.
	if err := store.Revoke(ctx, userSub, liftedAt.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	authztest.Eventually(t, time.Second, func() bool {
		_, err := v1.Validate(ctx, fresh)
		return authz.CodeOf(err) == authz.CodeInvalidToken
	}, "re-block seen")
	if err := store.Lift(ctx, "auth0|never-blocked", time.Now()); err != nil {
		t.Fatalf("lifting a subject never revoked: %v", err)
	}
}

func TestRevocationWatcherWaitsForBucket(t *testing.T) {
	t.Parallel()
	js := natstest.JetStream(t)
	ctx := t.Context()
	w := NewRevocationWatcher(js)
	w.retry = 50 * time.Millisecond
	go func() { _ = w.Run(ctx) }()
	time.Sleep(150 * time.Millisecond)
	if w.Ready() == nil {
		t.Fatal("ready without the bucket")
	}
	store := newRevocationStore(t, js)
	if err := store.Revoke(ctx, "google-oauth2|1111", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, w)
	authztest.Eventually(t, time.Second, func() bool { _, ok := w.RevokedAt("google-oauth2|1111"); return ok }, "revocation loaded")
}

func TestRevokeValidates(t *testing.T) {
	t.Parallel()
	_, store := revocations(t)
	if err := store.Revoke(context.Background(), "", time.Now()); err == nil {
		t.Error("empty subject accepted")
	}
	if err := store.Revoke(context.Background(), "auth0|x", time.Time{}); err == nil {
		t.Error("zero time accepted")
	}
	if got := RevocationKey("auth0|6553da60a54af58e29493993"); got != "YXV0aDB8NjU1M2RhNjBhNTRhZjU4ZTI5NDkzOTkz" {
		t.Errorf("key %q", got)
	}
}

// TestRevocationWatcherIgnoresDeletes: revocations only move forward. A
// delete or purge of a key (which the users service never writes) leaves the
// subject revoked, in a running watcher and in one that loads afterwards.
func TestRevocationWatcherIgnoresDeletes(t *testing.T) {
	t.Parallel()
	js, store := revocations(t)
	ctx := t.Context()
	at := time.Now().UTC()
	if err := store.Revoke(ctx, userSub, at); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, ctx, js)
	kv, err := js.KeyValue(ctx, RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, RevocationKey(userSub)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, RevocationKey(userSub)); err != nil {
		t.Fatal(err)
	}
	// An older instant on the feed does not move it back either.
	old, _ := json.Marshal(Revocation{Subject: userSub, RevokedAt: at.Add(-time.Hour)})
	if _, err := kv.Put(ctx, RevocationKey(userSub), old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for i, w := range []*RevocationWatcher{w, startWatcher(t, ctx, js)} {
		if got, ok := w.RevokedAt(userSub); !ok || (i == 0 && !got.Equal(at)) {
			t.Fatalf("watcher %d: revoked at %v, %v after delete, purge and an older put; want %v", i, got, ok, at)
		}
	}
}

// startWatcher runs a RevocationWatcher on js until ctx ends and returns it
// once it has loaded the bucket.
func startWatcher(tb testing.TB, ctx context.Context, js jetstream.JetStream) *RevocationWatcher {
	tb.Helper()
	w := NewRevocationWatcher(js)
	go func() { _ = w.Run(ctx) }()
	waitReady(tb, ctx, w)
	return w
}

// waitReady fails the test unless w has loaded the bucket within 5 s.
func waitReady(tb testing.TB, ctx context.Context, w *RevocationWatcher) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
}

// TestRevocationWatcherOnRevoke: OnRevoke hears of every new revocation the
// live feed brings, and of nothing else: not the revocations already in the
// bucket when the watcher loads it, not a lift, not an older instant, not a
// delete. The callback runs in the feed's order, so a later revocation's
// call proves none came for what was written before it.
func TestRevocationWatcherOnRevoke(t *testing.T) {
	t.Parallel()
	js, store := revocations(t)
	ctx := t.Context()
	const before, blocked, marker = "auth0|blocked-before-start", "auth0|blocked-live", "auth0|marker"
	at := time.Now()
	if err := store.Revoke(ctx, before, at); err != nil {
		t.Fatal(err)
	}

	calls := make(chan string, 16)
	w := NewRevocationWatcher(js)
	w.OnRevoke(func(sub string) { calls <- sub })
	go func() { _ = w.Run(ctx) }()
	waitReady(t, ctx, w)
	next := func(want string) {
		t.Helper()
		if got := authztest.Receive(t, calls, 2*time.Second, "OnRevoke("+want+")"); got != want {
			t.Fatalf("OnRevoke(%q), want OnRevoke(%q)", got, want)
		}
	}

	if err := store.Revoke(ctx, blocked, at); err != nil {
		t.Fatal(err)
	}
	next(blocked) // the initial load did not call it for before
	if _, ok := w.RevokedAt(blocked); !ok {
		t.Fatal("OnRevoke called before the watcher knows the revocation")
	}

	if err := store.Lift(ctx, blocked, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}
	older, _ := json.Marshal(Revocation{Subject: blocked, RevokedAt: at.Add(-time.Hour).UTC()})
	if _, err := kv.Put(ctx, RevocationKey(blocked), older); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, RevocationKey(before)); err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, marker, at); err != nil {
		t.Fatal(err)
	}
	next(marker) // not blocked (lifted, then an older instant) nor before (deleted)

	// A later block of the lifted subject is a new revocation.
	if err := store.Revoke(ctx, blocked, at.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	next(blocked)
	select {
	case got := <-calls:
		t.Fatalf("unexpected OnRevoke(%q)", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRevocationWatcherReportsWhatItMissed: revocations written while the
// watcher's connection was down never reach the feed; the load after the
// reconnect finds them and reports the new ones to OnRevoke (a lift or a
// revocation it already knew is not reported), so a person blocked during
// the outage is still kicked.
func TestRevocationWatcherReportsWhatItMissed(t *testing.T) {
	t.Parallel()
	js, store := revocations(t)
	ctx := t.Context()
	const known, lifted, missed = "auth0|known", "auth0|lifted", "auth0|missed"
	at := time.Now()
	for _, sub := range []string{known, lifted} {
		if err := store.Revoke(ctx, sub, at); err != nil {
			t.Fatal(err)
		}
	}
	var calls []string
	w := NewRevocationWatcher(js)
	w.OnRevoke(func(sub string) { calls = append(calls, sub) })
	prefix := "$KV." + RevocationBucket + "."
	if err := w.load(ctx, prefix, false); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Fatalf("the initial load reported %v", calls)
	}
	// The outage: a new block and a lift the feed never brought.
	if err := store.Revoke(ctx, missed, at); err != nil {
		t.Fatal(err)
	}
	if err := store.Lift(ctx, lifted, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := w.load(ctx, prefix, true); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != missed {
		t.Fatalf("the load after a reconnect reported %v, want only %s", calls, missed)
	}
	if _, ok := w.LiftedAt(lifted); !ok {
		t.Error("the missed lift was not merged")
	}
}
