package natsauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/cas"
)

// RevocationBucket is the JetStream KV bucket of revoked subjects
// (docs/conventions.md). The users service writes it; every validator watches it.
const RevocationBucket = "authmesh_revocations"

// revokedForever is used for an entry whose value cannot be read: failing
// closed rejects every token of that subject until the entry is fixed.
var revokedForever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Revocation is the value stored under RevocationKey(sub).
type Revocation struct {
	Subject   string    `json:"sub"`
	RevokedAt time.Time `json:"revoked_at"` // RFC 3339 with nanoseconds, UTC
	// LiftedAt, when after RevokedAt, is when the subject was unblocked:
	// tokens issued from then on pass even within the validator's leeway
	// after RevokedAt (see authz.RevocationLifter).
	LiftedAt time.Time `json:"lifted_at,omitzero"`
}

// RevocationKey is the bucket key of a subject: base64url without padding,
// because subjects like "auth0|123" contain characters keys may not.
func RevocationKey(sub string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(sub))
}

// RevocationStore writes revocations. Only the users service uses it.
type RevocationStore struct {
	kv jetstream.KeyValue
}

// NewRevocationStore creates (or updates) the bucket idempotently, with the
// given number of replicas (1 in development, 3 in compose).
func NewRevocationStore(ctx context.Context, js jetstream.JetStream, replicas int) (*RevocationStore, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RevocationBucket,
		Description: "authmesh: subjects whose tokens issued before revoked_at are rejected",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natsauth: revocation bucket: %w", err)
	}
	return &RevocationStore{kv: kv}, nil
}

// Revoke rejects, from now on and in every service, the tokens of sub issued
// at or before at. A later revocation moves the instant forward; an earlier
// one is a no-op, so re-blocking never resurrects tokens. Unblocking a user
// must not call anything here: tokens issued before the block stay rejected,
// and tokens issued after it carry a later iat and pass.
func (s *RevocationStore) Revoke(ctx context.Context, sub string, at time.Time) error {
	if sub == "" {
		return errors.New("natsauth: revoke: empty subject")
	}
	if at.IsZero() {
		return errors.New("natsauth: revoke: zero time")
	}
	// Optimistic concurrency: two replicas blocking the same user at once
	// must end with the later instant, whatever the order of writes.
	err := s.update(ctx, sub, func(cur *Revocation) (*Revocation, error) {
		if cur != nil && !cur.RevokedAt.Before(at) {
			return nil, nil
		}
		return &Revocation{Subject: sub, RevokedAt: at.UTC()}, nil
	})
	if err != nil {
		return fmt.Errorf("natsauth: revoke: %w", err)
	}
	return nil
}

// update applies change to sub's entry with compare-and-set, again on a lost
// race. change sees the entry (nil when there is none; an unreadable one
// as the zero Revocation) and returns what to write, or nil to write
// nothing.
func (s *RevocationStore) update(ctx context.Context, sub string, change func(cur *Revocation) (*Revocation, error)) error {
	key := RevocationKey(sub)
	_, err := cas.Retry(func() (struct{}, error) {
		entry, err := s.kv.Get(ctx, key)
		var cur *Revocation
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return struct{}{}, err
		default:
			cur = &Revocation{}
			if json.Unmarshal(entry.Value(), cur) != nil {
				*cur = Revocation{}
			}
		}
		next, err := change(cur)
		if next == nil || err != nil {
			return struct{}{}, err
		}
		val, err := json.Marshal(next)
		if err != nil {
			return struct{}{}, err
		}
		if cur == nil {
			_, err = s.kv.Create(ctx, key, val)
		} else {
			_, err = s.kv.Update(ctx, key, val, entry.Revision())
		}
		if cas.Conflict(err) {
			return struct{}{}, cas.Lost(err)
		}
		return struct{}{}, err
	})
	return err
}

// Lift records that sub was unblocked at at: tokens issued from then on are
// accepted even within the validators' leeway after the revocation, which
// would otherwise refuse them (tokens issued at or before the revocation
// stay rejected). Call it before the tenant unblocks the subject. Lifting a
// subject never revoked, or lifting earlier than the recorded lift, is a no-op.
func (s *RevocationStore) Lift(ctx context.Context, sub string, at time.Time) error {
	if sub == "" || at.IsZero() {
		return errors.New("natsauth: lift: empty subject or zero time")
	}
	err := s.update(ctx, sub, func(cur *Revocation) (*Revocation, error) {
		switch {
		case cur == nil:
			return nil, nil
		case cur.Subject != sub:
			return nil, errors.New("unreadable revocation entry")
		case !at.After(cur.RevokedAt) || !cur.LiftedAt.Before(at):
			return nil, nil
		}
		next := *cur
		next.LiftedAt = at.UTC()
		return &next, nil
	})
	if err != nil {
		return fmt.Errorf("natsauth: lift: %w", err)
	}
	return nil
}

// RevocationWatcher implements authz.RevocationChecker from an in-memory copy
// of the bucket: a lookup is a map read, and a revocation reaches every
// watcher within milliseconds of being written.
//
// It reads the bucket without creating a consumer on it, so a validator in
// another NATS account needs only read-only imports from the users account
// (pkg/platform/mesh): the live feed of $KV.authmesh_revocations.> and the
// stream's INFO and DIRECT.GET API. It subscribes to the feed first, then
// loads every key's last value (stream info with a subject filter, then one
// direct get per key), and loads again after every reconnect, when the feed
// may have missed writes.
//
// Entries only move forward: a key keeps the latest revoked_at ever seen,
// and deletes and purges are ignored. Unblocking writes nothing (see
// RevocationStore.Revoke), so a delete is never legitimate; whoever could
// publish one would otherwise unblock a user everywhere.
//
// A service must not report ready before Ready returns nil: until the
// values are loaded it would accept tokens revoked before it started.
//
//	w := natsauth.NewRevocationWatcher(js) // the users account's JetStream API, or its import
//	go w.Run(ctx)
//	v, _ := authz.NewValidator(keys, authz.WithRevocations(w), ...)
//	if err := w.WaitReady(ctx); err != nil { ... }
type RevocationWatcher struct {
	js    jetstream.JetStream
	retry time.Duration

	mu      sync.RWMutex
	revoked map[string]Revocation
	err     error

	ready     chan struct{}
	readyOnce sync.Once

	onRevoke atomic.Pointer[func(sub string)] // OnRevoke
}

// NewRevocationWatcher returns a watcher reading the bucket through js,
// whose connection also carries the live feed; call Run to start it.
func NewRevocationWatcher(js jetstream.JetStream) *RevocationWatcher {
	return &RevocationWatcher{
		js:      js,
		retry:   time.Second,
		revoked: make(map[string]Revocation),
		err:     errors.New("natsauth: revocations not loaded yet"),
		ready:   make(chan struct{}),
	}
}

// OnRevoke calls f, on the watcher's goroutine, with the subject of every
// revocation the live feed brings that moves its instant forward (a new
// block, not a lift, not the initial load), including those written while
// the connection was down, which the load after the reconnect finds. The auth callout uses it to
// close the subject's NATS connections. f must not block for long.
func (w *RevocationWatcher) OnRevoke(f func(sub string)) { w.onRevoke.Store(&f) }

// RevokedAt implements authz.RevocationChecker.
func (w *RevocationWatcher) RevokedAt(sub string) (time.Time, bool) {
	w.mu.RLock()
	r, ok := w.revoked[sub]
	w.mu.RUnlock()
	return r.RevokedAt, ok
}

// LiftedAt implements authz.RevocationLifter.
func (w *RevocationWatcher) LiftedAt(sub string) (time.Time, bool) {
	w.mu.RLock()
	r, ok := w.revoked[sub]
	w.mu.RUnlock()
	return r.LiftedAt, ok && !r.LiftedAt.IsZero()
}

// Ready returns nil once the values have been loaded.
func (w *RevocationWatcher) Ready() error {
	select {
	case <-w.ready:
		return nil
	default:
		w.mu.RLock()
		defer w.mu.RUnlock()
		return w.err
	}
}

// WaitReady blocks until Ready would return nil or ctx ends.
func (w *RevocationWatcher) WaitReady(ctx context.Context) error {
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%w)", ctx.Err(), w.Ready())
	}
}

// Run follows the bucket until ctx ends. It waits for the bucket to exist
// (the users service creates it) and starts over if the feed ends, keeping
// the known revocations meanwhile (failing closed).
func (w *RevocationWatcher) Run(ctx context.Context) error {
	for {
		err := w.follow(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-w.ready:
		default:
			w.mu.Lock()
			w.err = fmt.Errorf("natsauth: revocations not loaded: %w", err)
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.retry):
		}
	}
}

// revocationCheck is how often follow looks for a reconnect.
const revocationCheck = 250 * time.Millisecond

func (w *RevocationWatcher) follow(ctx context.Context) error {
	nc := w.js.Conn()
	prefix := "$KV." + RevocationBucket + "."
	feed := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(prefix+">", feed)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription is in place on the server before the load starts, so
	// no write falls between the two.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return err
	}
	reconnects := nc.Stats().Reconnects
	if err := w.load(ctx, prefix, false); err != nil {
		return err
	}
	t := time.NewTicker(revocationCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-feed:
			if sub, revoked := w.applyMsg(strings.TrimPrefix(m.Subject, prefix), m.Header, m.Data); revoked {
				w.notify(sub)
			}
		case <-t.C:
			if !sub.IsValid() {
				return errors.New("natsauth: revocation feed closed")
			}
			// Writes made while disconnected never reach the feed: load
			// again once the connection is back, and report the new
			// revocations among them as the feed would have.
			if r := nc.Stats().Reconnects; r != reconnects && nc.IsConnected() {
				if err := w.load(ctx, prefix, true); err != nil {
					return err
				}
				reconnects = r
			}
		}
	}
}

// notify calls the OnRevoke function, if any.
func (w *RevocationWatcher) notify(sub string) {
	if f := w.onRevoke.Load(); f != nil {
		(*f)(sub)
	}
}

// load reads every key's last value and merges it in, then reports ready.
// With notify (a load after a reconnect, not the initial one) each
// revocation that moves forward goes to OnRevoke.
func (w *RevocationWatcher) load(ctx context.Context, prefix string, notify bool) error {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := w.js.Stream(lctx, "KV_"+RevocationBucket)
	if err != nil {
		return err
	}
	info, err := stream.Info(lctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return err
	}
	for subj := range info.State.Subjects {
		m, err := stream.GetLastMsgForSubject(lctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged meanwhile
		}
		if err != nil {
			return err
		}
		if sub, revoked := w.applyMsg(strings.TrimPrefix(m.Subject, prefix), m.Header, m.Data); revoked && notify {
			w.notify(sub)
		}
	}
	w.mu.Lock()
	w.err = nil
	w.mu.Unlock()
	w.readyOnce.Do(func() { close(w.ready) })
	return nil
}

// applyMsg merges one KV message: a put moves the key's instant forward;
// deletes, purges and keys this package does not write change nothing. It
// reports the subject and whether its revocation instant moved forward.
func (w *RevocationWatcher) applyMsg(key string, h nats.Header, data []byte) (string, bool) {
	switch h.Get(kvOperationHeader) {
	case "DEL", "PURGE":
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil || len(raw) == 0 {
		return "", false // not a key this package writes; it cannot match any subject
	}
	sub := string(raw)
	rev := Revocation{Subject: sub, RevokedAt: revokedForever}
	var r Revocation
	if json.Unmarshal(data, &r) == nil && r.Subject == sub && !r.RevokedAt.IsZero() {
		rev = r
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, ok := w.revoked[sub]
	switch {
	case !ok || rev.RevokedAt.After(cur.RevokedAt):
		w.revoked[sub] = rev
		return sub, rev.LiftedAt.IsZero()
	case rev.RevokedAt.Equal(cur.RevokedAt) && rev.LiftedAt.After(cur.LiftedAt):
		// The lift of the same block moves forward too, never back.
		cur.LiftedAt = rev.LiftedAt
		w.revoked[sub] = cur
	}
	return sub, false
}

// kvOperationHeader marks KV deletes and purges (nats.go's KV-Operation).
const kvOperationHeader = "KV-Operation"
