package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// fakes with failure injection; all safe for concurrent use.

type fakeDir struct {
	mu      sync.Mutex
	blocked map[string]bool
	calls   int
	fail    int // fail the next n SetBlocked calls
}

func (d *fakeDir) ListUsers(context.Context, int, int) (domain.Page, error) {
	return domain.Page{}, nil
}
func (d *fakeDir) GetUser(_ context.Context, id string) (domain.User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.blocked[id]
	if !ok {
		return domain.User{}, domain.ErrNotFound
	}
	return domain.User{ID: id, Blocked: b}, nil
}
func (d *fakeDir) SetBlocked(_ context.Context, id string, blocked bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.fail > 0 {
		d.fail--
		return fmt.Errorf("tenant down: %w", domain.ErrUnavailable)
	}
	d.blocked[id] = blocked
	return nil
}
func (d *fakeDir) ReplaceRoles(context.Context, string, []string) ([]string, error) { return nil, nil }

type fakeMods struct {
	mu   sync.Mutex
	recs map[string]domain.Moderation
	revs map[string]uint64
}

func (m *fakeMods) Get(_ context.Context, id string) (domain.Moderation, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return domain.Moderation{}, 0, domain.ErrNotFound
	}
	return r, m.revs[id], nil
}
func (m *fakeMods) Put(_ context.Context, r domain.Moderation, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.revs[r.UserID] != rev {
		return 0, domain.ErrConflict
	}
	m.revs[r.UserID]++
	m.recs[r.UserID] = r
	return m.revs[r.UserID], nil
}
func (m *fakeMods) Unfinished(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, r := range m.recs {
		if !r.Done() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

type revocation struct {
	sub string
	at  time.Time
}

type fakeRevoker struct {
	mu    sync.Mutex
	calls []revocation
	fail  int
}

func (r *fakeRevoker) Lift(context.Context, string, time.Time) error { return nil }

func (r *fakeRevoker) Revoke(_ context.Context, sub string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return domain.ErrUnavailable
	}
	r.calls = append(r.calls, revocation{sub, at})
	return nil
}

type published struct {
	typ, entity, identity string
	at                    time.Time
}

type identityKey struct{}

type fakeEvents struct {
	mu   sync.Mutex
	sent []published
	fail int
}

func (e *fakeEvents) PublishModeration(ctx context.Context, m domain.Moderation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail > 0 {
		e.fail--
		return domain.ErrUnavailable
	}
	id, _ := ctx.Value(identityKey{}).(string)
	e.sent = append(e.sent, published{m.EventType(), m.EntityID(), id, m.At})
	return nil
}

type fixture struct {
	svc    *Service
	dir    *fakeDir
	mods   *fakeMods
	rev    *fakeRevoker
	events *fakeEvents
	clock  *fakeClock
}

type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
func (c *fakeClock) sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
	return nil
}

const uid = "auth0|6553da60a54af58e29493992"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		dir:    &fakeDir{blocked: map[string]bool{uid: false}},
		mods:   &fakeMods{recs: map[string]domain.Moderation{}, revs: map[string]uint64{}},
		rev:    &fakeRevoker{},
		events: &fakeEvents{},
		clock:  &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 300_000_000, time.UTC)},
	}
	svc, err := New(Deps{Directory: f.dir, Profiles: nopProfiles{}, Moderations: f.mods, Revoker: f.rev, Events: f.events})
	if err != nil {
		t.Fatal(err)
	}
	svc.now, svc.sleep = f.clock.now, f.clock.sleep
	f.svc = svc
	return f
}

type nopProfiles struct{}

func (nopProfiles) Get(context.Context, string) (domain.Profile, error) {
	return domain.Profile{}, domain.ErrNotFound
}
func (nopProfiles) Update(context.Context, string, func(*domain.Profile) error) (domain.Profile, error) {
	return domain.Profile{}, nil
}

func as(who string) context.Context {
	return context.WithValue(context.Background(), identityKey{}, who)
}

func TestBlockCompletesEverything(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u, err := f.svc.SetBlocked(as("admin"), uid, true)
	if err != nil || !u.Blocked {
		t.Fatalf("block: %+v, %v", u, err)
	}
	if !f.dir.blocked[uid] {
		t.Fatal("tenant not blocked")
	}
	if len(f.rev.calls) != 1 || f.rev.calls[0].sub != uid {
		t.Fatalf("revocations = %+v", f.rev.calls)
	}
	if len(f.events.sent) != 1 || f.events.sent[0].typ != domain.EventUserBlocked || f.events.sent[0].identity != "admin" {
		t.Fatalf("events = %+v", f.events.sent)
	}
	if !f.events.sent[0].at.Equal(f.rev.calls[0].at) {
		t.Fatal("event and revocation disagree on the block time")
	}
	m, _, _ := f.mods.Get(context.Background(), uid)
	if !m.Done() {
		t.Fatalf("intent not done: %+v", m)
	}
}

func TestBlockFailuresAreFinishedLater(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		inject func(f *fixture)
		// finish runs after the failed request: a retried request or the reconciler
		finish        func(f *fixture) error
		wantIdentity  string
		wantDirCalls  int
		wantRevokeAt0 bool // the revocation kept the first attempt's time
	}{
		{
			name:   "tenant down, request retried",
			inject: func(f *fixture) { f.dir.fail = 1 },
			finish: func(f *fixture) error {
				_, err := f.svc.SetBlocked(as("admin"), uid, true)
				return err
			},
			wantIdentity: "admin", wantDirCalls: 2,
		},
		{
			name:   "revocation fails, reconciler finishes",
			inject: func(f *fixture) { f.rev.fail = 1 },
			finish: func(f *fixture) error {
				f.clock.advance(time.Minute)
				return f.svc.Reconcile(as("users-service@clients"))
			},
			wantIdentity: "users-service@clients", wantDirCalls: 1,
		},
		{
			name:   "event fails, request retried",
			inject: func(f *fixture) { f.events.fail = 1 },
			finish: func(f *fixture) error {
				f.clock.advance(time.Second)
				_, err := f.svc.SetBlocked(as("admin"), uid, true)
				return err
			},
			wantIdentity: "admin", wantDirCalls: 1, wantRevokeAt0: true,
		},
		{
			name:   "event fails, reconciler finishes",
			inject: func(f *fixture) { f.events.fail = 1 },
			finish: func(f *fixture) error {
				f.clock.advance(time.Minute)
				return f.svc.Reconcile(as("users-service@clients"))
			},
			wantIdentity: "users-service@clients", wantDirCalls: 1, wantRevokeAt0: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			tt.inject(f)
			_, err := f.svc.SetBlocked(as("admin"), uid, true)
			if !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("first attempt: err = %v, want unavailable", err)
			}
			first, _, err := f.mods.Get(context.Background(), uid)
			if err != nil || first.Done() {
				t.Fatalf("intent after failure: %+v, %v", first, err)
			}
			if err := tt.finish(f); err != nil {
				t.Fatalf("finish: %v", err)
			}
			m, _, _ := f.mods.Get(context.Background(), uid)
			if !m.Done() || !m.RequestedAt.Equal(first.RequestedAt) {
				t.Fatalf("intent = %+v (first %+v)", m, first)
			}
			if !f.dir.blocked[uid] || f.dir.calls != tt.wantDirCalls {
				t.Fatalf("tenant blocked=%v calls=%d", f.dir.blocked[uid], f.dir.calls)
			}
			if len(f.rev.calls) != 1 {
				t.Fatalf("revocations = %+v", f.rev.calls)
			}
			if tt.wantRevokeAt0 && !f.rev.calls[0].at.Equal(first.At) {
				t.Fatal("retry moved the revocation time")
			}
			if len(f.events.sent) != 1 || f.events.sent[0].identity != tt.wantIdentity || f.events.sent[0].entity != first.EntityID() {
				t.Fatalf("events = %+v", f.events.sent)
			}
		})
	}
}

func TestReconcileLeavesFreshIntentsToTheirRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.events.fail = 1
	_, _ = f.svc.SetBlocked(as("admin"), uid, true)
	if err := f.svc.Reconcile(as("svc")); err != nil {
		t.Fatal(err)
	}
	if len(f.events.sent) != 0 {
		t.Fatal("reconciler raced a fresh request")
	}
	f.clock.advance(10 * time.Second)
	if err := f.svc.Reconcile(as("svc")); err != nil {
		t.Fatal(err)
	}
	if len(f.events.sent) != 1 {
		t.Fatal("reconciler did not finish the old intent")
	}
}

func TestConcurrentBlocksConverge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := f.svc.SetBlocked(as("admin"), uid, true); err != nil && !errors.Is(err, domain.ErrConflict) {
				t.Errorf("block: %v", err)
			}
		})
	}
	wg.Wait()
	m, _, _ := f.mods.Get(context.Background(), uid)
	if !m.Done() || !f.dir.blocked[uid] {
		t.Fatalf("intent = %+v", m)
	}
	// Workers may repeat a step, but only for the one intent: the stream
	// de-duplicates the event on its entity id.
	for _, e := range f.events.sent {
		if e.entity != m.EntityID() {
			t.Fatalf("events for more than one intent: %+v", f.events.sent)
		}
	}
	if len(f.events.sent) == 0 || len(f.rev.calls) == 0 {
		t.Fatal("no event or no revocation")
	}
}

func TestUnblock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if _, err := f.svc.SetBlocked(as("admin"), uid, true); err != nil {
		t.Fatal(err)
	}
	revokedAt := f.rev.calls[0].at
	u, err := f.svc.SetBlocked(as("admin"), uid, false)
	if err != nil || u.Blocked || f.dir.blocked[uid] {
		t.Fatalf("unblock: %+v, %v", u, err)
	}
	t.Run("waits until fresh tokens have a later iat", func(t *testing.T) {
		if len(f.clock.slept) != 1 {
			t.Fatalf("slept %v", f.clock.slept)
		}
		m, _, _ := f.mods.Get(context.Background(), uid)
		if got := m.At.Truncate(time.Second); !got.After(revokedAt) {
			t.Fatalf("tenant unblocked at %v, iat second %v is not after the revocation %v", m.At, got, revokedAt)
		}
	})
	t.Run("no new revocation and an unblocked event", func(t *testing.T) {
		if len(f.rev.calls) != 1 {
			t.Fatalf("revocations = %+v", f.rev.calls)
		}
		if len(f.events.sent) != 2 || f.events.sent[1].typ != domain.EventUserUnblocked {
			t.Fatalf("events = %+v", f.events.sent)
		}
	})
	t.Run("unblocking again is a no-op", func(t *testing.T) {
		if _, err := f.svc.SetBlocked(as("admin"), uid, false); err != nil {
			t.Fatal(err)
		}
		if len(f.events.sent) != 2 || f.dir.calls != 2 {
			t.Fatalf("events = %d, tenant calls = %d", len(f.events.sent), f.dir.calls)
		}
	})
	t.Run("unblocking a never-blocked user does nothing", func(t *testing.T) {
		g := newFixture(t)
		u, err := g.svc.SetBlocked(as("admin"), uid, false)
		if err != nil || u.Blocked || g.dir.calls != 0 || len(g.events.sent) != 0 {
			t.Fatalf("unblock: %+v, %v, tenant calls %d, events %d", u, err, g.dir.calls, len(g.events.sent))
		}
	})
	t.Run("an unknown user is not found", func(t *testing.T) {
		if _, err := f.svc.SetBlocked(as("admin"), "auth0|nobody", true); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestUnblockSupersedesUnfinishedBlock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.events.fail = 1
	_, _ = f.svc.SetBlocked(as("admin"), uid, true)
	if _, err := f.svc.SetBlocked(as("admin"), uid, false); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(time.Minute)
	if err := f.svc.Reconcile(as("svc")); err != nil {
		t.Fatal(err)
	}
	if f.dir.blocked[uid] {
		t.Fatal("user ends blocked")
	}
	for _, e := range f.events.sent {
		if e.typ == domain.EventUserBlocked {
			t.Fatal("a superseded block was published later")
		}
	}
}
