package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// memProfiles is app.Profiles in memory; it counts the writes.
type memProfiles struct {
	mu     sync.Mutex
	recs   map[string]domain.Profile
	writes atomic.Int32
}

func newMemProfiles() *memProfiles { return &memProfiles{recs: map[string]domain.Profile{}} }

func (m *memProfiles) Get(_ context.Context, id string) (domain.Profile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.recs[id]
	if !ok {
		return domain.Profile{}, fmt.Errorf("profile %s: %w", id, domain.ErrNotFound)
	}
	return p, nil
}

func (m *memProfiles) Update(_ context.Context, id string, fn func(*domain.Profile) error) (domain.Profile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.recs[id]
	p.UserID = id
	if err := fn(&p); err != nil {
		return domain.Profile{}, err
	}
	m.recs[id] = p
	m.writes.Add(1)
	return p, nil
}

// flakyDir is a tenant that can be taken down: GetUser then fails with err.
type flakyDir struct {
	*countingDir
	mu   sync.Mutex
	down error
}

func (d *flakyDir) setDown(err error) { d.mu.Lock(); d.down = err; d.mu.Unlock() }

func (d *flakyDir) GetUser(ctx context.Context, id string) (domain.User, error) {
	d.mu.Lock()
	err := d.down
	d.mu.Unlock()
	if err != nil {
		d.gets.Add(1)
		return domain.User{}, err
	}
	return d.countingDir.GetUser(ctx, id)
}

var errTenantDown = fmt.Errorf("%w: mgmt: GET /api/v2/users/x: 503 Service Unavailable", domain.ErrUnavailable)

func newSnapshotService(t *testing.T, dir Directory, prof *memProfiles) (*Service, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	svc, err := New(Deps{
		Directory: dir, Profiles: prof, Moderations: &fakeMods{recs: map[string]domain.Moderation{}, revs: map[string]uint64{}},
		Revoker: &fakeRevoker{}, Events: &fakeEvents{},
		UserCacheTTL: time.Minute, TenantWait: 200 * time.Millisecond, TenantDownFor: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.now = clock.now
	svc.users.now = clock.now
	return svc, clock
}

var home = &domain.Address{Line1: "1 Main St", City: "Springfield", PostalCode: "12345", Country: "US"}

// The tenant goes away after a user was read once: Me and the profile
// endpoint answer from the snapshot (also once the cache expired), the
// admin/write read does not, and for a while the tenant is not even asked.
func TestMeAnswersFromTheSnapshotWhileTheTenantIsDown(t *testing.T) {
	t.Parallel()
	dir := &flakyDir{countingDir: newCountingDir(userA)}
	prof := newMemProfiles()
	prof.recs[userA] = domain.Profile{UserID: userA, ShippingAddress: home}
	svc, clock := newSnapshotService(t, dir, prof)
	ctx := context.Background()

	mustMe(t, svc, userA)
	if p, _ := prof.Get(ctx, userA); p.Tenant == nil || p.Tenant.Email != userA+"@x" || !slices.Equal(p.Tenant.Roles, []string{"customer"}) {
		t.Fatalf("snapshot after a tenant read: %+v", p.Tenant)
	}
	if p, _ := prof.Get(ctx, userA); p.ShippingAddress == nil {
		t.Fatal("saving the snapshot lost the shipping address")
	}

	clock.advance(2 * time.Minute) // the cache entry expired
	for _, down := range []error{
		errTenantDown,
		fmt.Errorf("%w: mgmt: GET /api/v2/users/x: transport_error: connection refused", domain.ErrUnavailable),
		fmt.Errorf("%w: mgmt: GET /api/v2/users/x: 429 Too Many Requests", domain.ErrUnavailable),
	} {
		t.Run(down.Error(), func(t *testing.T) {
			dir.setDown(down)
			clock.advance(10 * time.Second) // past the down window of the previous case
			before := dir.gets.Load()
			for _, read := range []func(context.Context, string) (domain.User, error){svc.Me, svc.Profile, svc.Me} {
				u, err := read(ctx, userA)
				if err != nil {
					t.Fatalf("tenant down: %v", err)
				}
				if u.Email != userA+"@x" || !slices.Equal(u.Roles, []string{"customer"}) || u.ShippingAddress == nil || *u.ShippingAddress != *home {
					t.Fatalf("tenant down: got %+v", u)
				}
			}
			if n := dir.gets.Load() - before; n != 1 {
				t.Fatalf("three reads asked the tenant %d times, want 1 (then it is known down)", n)
			}
			if _, err := svc.User(ctx, userA); !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("User (admin and write paths) while the tenant is down: %v, want ErrUnavailable", err)
			}
		})
	}

	// Back up: once the down window passed, the tenant is asked again.
	dir.setDown(nil)
	dir.mu.Lock()
	dir.users[userA] = domain.User{ID: userA, Email: "new@x", Roles: []string{"support"}}
	dir.mu.Unlock()
	clock.advance(10 * time.Second)
	if u := mustMe(t, svc, userA); u.Email != "new@x" {
		t.Fatalf("after the tenant returned: %+v", u)
	}
	if p, _ := prof.Get(ctx, userA); p.Tenant == nil || p.Tenant.Email != "new@x" {
		t.Fatalf("snapshot not refreshed: %+v", p.Tenant)
	}
}

// A user the service never read from the tenant: /v1/me cannot answer, the
// profile endpoint answers with the id and the local profile.
func TestColdUserWhileTheTenantIsDown(t *testing.T) {
	t.Parallel()
	dir := &flakyDir{countingDir: newCountingDir(userA, userB)}
	dir.setDown(errTenantDown)
	prof := newMemProfiles()
	prof.recs[userA] = domain.Profile{UserID: userA, Name: "Ann", ShippingAddress: home}
	svc, _ := newSnapshotService(t, dir, prof)
	ctx := context.Background()

	if _, err := svc.Me(ctx, userA); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Me without a snapshot: %v, want ErrUnavailable", err)
	}
	u, err := svc.Profile(ctx, userA)
	if err != nil {
		t.Fatalf("Profile without a snapshot: %v", err)
	}
	if u.ID != userA || u.Name != "Ann" || u.ShippingAddress == nil || *u.ShippingAddress != *home || u.Email != "" || len(u.Roles) != 0 {
		t.Fatalf("Profile without a snapshot: %+v", u)
	}
	// No local profile at all: still an answer, without an address.
	if u, err := svc.Profile(ctx, userB); err != nil || u.ID != userB || u.ShippingAddress != nil {
		t.Fatalf("Profile of a user with nothing stored: %+v, %v", u, err)
	}
}

// An unknown user stays unknown; only unavailability falls back.
func TestNotFoundDoesNotFallBack(t *testing.T) {
	t.Parallel()
	prof := newMemProfiles()
	prof.recs[userC] = domain.Profile{UserID: userC, Tenant: &domain.TenantSnapshot{Email: "gone@x"}}
	svc, _ := newSnapshotService(t, newCountingDir(userA), prof)
	for _, read := range []func(context.Context, string) (domain.User, error){svc.Me, svc.Profile} {
		if _, err := read(context.Background(), userC); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("deleted user: %v, want ErrNotFound", err)
		}
	}
}

// A tenant that hangs costs the caller TenantWait, not the fetch timeout;
// the fetch goes on and fills the cache when it answers.
func TestSlowTenantAnswersFromTheSnapshotAfterTheWait(t *testing.T) {
	t.Parallel()
	dir := newCountingDir(userA)
	prof := newMemProfiles()
	prof.recs[userA] = domain.Profile{UserID: userA, Tenant: &domain.TenantSnapshot{Email: "old@x", Roles: []string{"customer"}}}
	svc, _ := newSnapshotService(t, dir, prof)
	dir.gate = make(chan struct{})

	start := time.Now()
	u, err := svc.Me(context.Background(), userA)
	if err != nil || u.Email != "old@x" {
		t.Fatalf("slow tenant: %+v, %v", u, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("slow tenant: answered after %v, want about TenantWait", d)
	}
	close(dir.gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p, _ := prof.Get(context.Background(), userA); p.Tenant != nil && p.Tenant.Email == userA+"@x" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background read did not refresh the snapshot")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Unchanged tenant data is not rewritten, and an older read never replaces
// a newer snapshot.
func TestSnapshotWrites(t *testing.T) {
	t.Parallel()
	prof := newMemProfiles()
	svc, _ := newSnapshotService(t, newCountingDir(), prof)
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	save := func(email string, at time.Time) {
		t.Helper()
		if err := svc.saveSnapshot(ctx, userA, domain.TenantSnapshot{Email: email, Roles: []string{"customer"}, ReadAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	save("a@x", t0)
	save("a@x", t0.Add(time.Minute))
	if n := prof.writes.Load(); n != 1 {
		t.Fatalf("%d writes for an unchanged snapshot, want 1", n)
	}
	save("b@x", t0.Add(2*time.Minute))
	save("stale@x", t0.Add(90*time.Second))
	if p, _ := prof.Get(ctx, userA); p.Tenant.Email != "b@x" {
		t.Fatalf("snapshot = %+v, want the newest read", p.Tenant)
	}
}
