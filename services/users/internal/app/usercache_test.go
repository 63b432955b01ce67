package app

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// countingDir is a tenant that counts GetUser calls; gate, when set, holds
// every GetUser until it is closed.
type countingDir struct {
	mu    sync.Mutex
	users map[string]domain.User
	gets  atomic.Int32
	gate  chan struct{}
}

func newCountingDir(ids ...string) *countingDir {
	d := &countingDir{users: map[string]domain.User{}}
	for _, id := range ids {
		d.users[id] = domain.User{ID: id, Email: id + "@x", Roles: []string{"customer"}}
	}
	return d
}

func (d *countingDir) ListUsers(context.Context, int, int) (domain.Page, error) {
	return domain.Page{}, nil
}

func (d *countingDir) GetUser(ctx context.Context, id string) (domain.User, error) {
	d.gets.Add(1)
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return domain.User{}, ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[id]
	if !ok {
		return domain.User{}, domain.ErrNotFound
	}
	u.Roles = append([]string(nil), u.Roles...)
	return u, nil
}

func (d *countingDir) SetBlocked(_ context.Context, id string, blocked bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.users[id]
	u.Blocked = blocked
	d.users[id] = u
	return nil
}

func (d *countingDir) ReplaceRoles(_ context.Context, id string, names []string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.users[id]
	u.Roles = append([]string(nil), names...)
	d.users[id] = u
	return names, nil
}

const (
	userA = "auth0|6553da60a54af58e29493991"
	userB = "auth0|6553da60a54af58e29493992"
	userC = "auth0|6553da60a54af58e29493993"
)

func newCachedService(t *testing.T, dir *countingDir, size int) (*Service, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	svc, err := New(Deps{
		Directory: dir, Profiles: nopProfiles{}, Moderations: &fakeMods{recs: map[string]domain.Moderation{}, revs: map[string]uint64{}},
		Revoker: &fakeRevoker{}, Events: &fakeEvents{},
		UserCacheTTL: time.Minute, UserCacheSize: size,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.now, svc.sleep = clock.now, clock.sleep
	svc.users.now = clock.now
	return svc, clock
}

func mustMe(t *testing.T, svc *Service, id string) domain.User {
	t.Helper()
	u, err := svc.Me(context.Background(), id)
	if err != nil {
		t.Fatalf("Me(%s): %v", id, err)
	}
	return u
}

func TestMeAsksTheTenantOncePerTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(t *testing.T, svc *Service, clock *fakeClock)
		check  func(t *testing.T, u domain.User)
	}{
		{"TTL ends", func(_ *testing.T, _ *Service, clock *fakeClock) { clock.advance(time.Minute) }, nil},
		{"blocked here", func(t *testing.T, svc *Service, _ *fakeClock) {
			if _, err := svc.SetBlocked(ctx, userA, true); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, u domain.User) {
			if !u.Blocked {
				t.Fatal("Me still says not blocked after the block")
			}
		}},
		{"roles replaced here", func(t *testing.T, svc *Service, _ *fakeClock) {
			if _, err := svc.ReplaceRoles(ctx, userA, []string{"support"}); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, u domain.User) {
			if len(u.Roles) != 1 || u.Roles[0] != "support" {
				t.Fatalf("roles %v after the change", u.Roles)
			}
		}},
		{"profile patched", func(t *testing.T, svc *Service, _ *fakeClock) {
			name := "Alice"
			if _, err := svc.UpdateProfile(ctx, userA, domain.ProfileUpdate{Name: &name}); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := newCountingDir(userA)
			svc, clock := newCachedService(t, dir, 100)
			for range 20 {
				mustMe(t, svc, userA)
			}
			clock.advance(59 * time.Second)
			u := mustMe(t, svc, userA)
			if n := dir.gets.Load(); n != 1 {
				t.Fatalf("21 lookups within the TTL asked the tenant %d times, want 1", n)
			}
			u.Roles[0] = "scribbled" // a caller's copy, not the cache's
			if got := mustMe(t, svc, userA); got.Roles[0] != "customer" {
				t.Fatalf("cached roles changed through a caller: %v", got.Roles)
			}

			// Changed in the tenant behind this service's back: only a
			// fresh read sees it.
			dir.mu.Lock()
			dir.users[userA] = domain.User{ID: userA, Email: "new@x", Roles: dir.users[userA].Roles}
			dir.mu.Unlock()
			if got := mustMe(t, svc, userA); got.Email != userA+"@x" {
				t.Fatalf("Me read the tenant again within the TTL: %s", got.Email)
			}

			tt.change(t, svc, clock)
			afterChange := dir.gets.Load()
			u = mustMe(t, svc, userA)
			mustMe(t, svc, userA)
			if u.Email != "new@x" {
				t.Fatalf("Me answers from the read before the change: %+v", u)
			}
			if tt.check != nil {
				tt.check(t, u)
			}
			if more := dir.gets.Load() - afterChange; more > 1 {
				t.Fatalf("two lookups after the change asked the tenant %d times", more)
			}
		})
	}
}

func TestMeSharesOneFetchPerUser(t *testing.T) {
	t.Parallel()
	dir := newCountingDir(userA)
	dir.gate = make(chan struct{})
	svc, _ := newCachedService(t, dir, 100)

	// The first caller gives up while the fetch is under way: the others
	// still get the user from it.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := svc.Me(ctx, userA); gaveUp <- err }()
	for dir.gets.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			u, err := svc.Me(context.Background(), userA)
			if err == nil && u.ID != userA {
				err = errors.New("wrong user " + u.ID)
			}
			errs <- err
		})
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled caller got %v", err)
	}
	time.Sleep(20 * time.Millisecond) // let the others queue on the fetch
	close(dir.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := dir.gets.Load(); got != 1 {
		t.Fatalf("%d concurrent lookups asked the tenant %d times, want 1", n+1, got)
	}
}

// A fetch that began before a change must not put what it read in the cache.
func TestMeDropsAFetchOverlappingAChange(t *testing.T) {
	t.Parallel()
	dir := newCountingDir(userA)
	dir.gate = make(chan struct{})
	svc, _ := newCachedService(t, dir, 100)
	done := make(chan domain.User)
	go func() { u, _ := svc.Me(context.Background(), userA); done <- u }()
	for dir.gets.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	svc.users.invalidate(userA) // a block by this replica lands meanwhile
	close(dir.gate)
	<-done
	dir.gate = nil
	mustMe(t, svc, userA)
	if got := dir.gets.Load(); got != 2 {
		t.Fatalf("tenant calls %d, want 2: the overlapping read was cached", got)
	}
}

func TestMeCacheIsBounded(t *testing.T) {
	t.Parallel()
	dir := newCountingDir(userA, userB, userC)
	svc, _ := newCachedService(t, dir, 2)
	mustMe(t, svc, userA)
	mustMe(t, svc, userB)
	mustMe(t, svc, userA) // B is now the least recently used
	mustMe(t, svc, userC) // evicts B
	if got := dir.gets.Load(); got != 3 {
		t.Fatalf("tenant calls %d, want 3", got)
	}
	mustMe(t, svc, userA)
	mustMe(t, svc, userC)
	if got := dir.gets.Load(); got != 3 {
		t.Fatalf("A and C should still be cached: tenant calls %d", got)
	}
	mustMe(t, svc, userB)
	if got := dir.gets.Load(); got != 4 {
		t.Fatalf("B should have been evicted: tenant calls %d", got)
	}
	svc.users.mu.Lock()
	size := len(svc.users.entries)
	svc.users.mu.Unlock()
	if size > 2 {
		t.Fatalf("%d entries, bound is 2", size)
	}
}

func TestMeDoesNotCacheFailures(t *testing.T) {
	t.Parallel()
	dir := newCountingDir()
	svc, _ := newCachedService(t, dir, 100)
	for range 2 {
		if _, err := svc.Me(context.Background(), userA); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("want ErrNotFound, got %v", err)
		}
	}
	if got := dir.gets.Load(); got != 2 {
		t.Fatalf("tenant calls %d, want 2", got)
	}
}

func TestNewRejectsNegativeCacheSettings(t *testing.T) {
	t.Parallel()
	d := Deps{Directory: newCountingDir(), Profiles: nopProfiles{}, Moderations: &fakeMods{}, Revoker: &fakeRevoker{}, Events: &fakeEvents{}}
	d.UserCacheTTL = -time.Second
	if _, err := New(d); err == nil {
		t.Fatal("negative TTL accepted")
	}
}
