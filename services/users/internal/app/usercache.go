package app

import (
	"container/list"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Defaults of the tenant user cache (Deps.UserCacheTTL, Deps.UserCacheSize).
const (
	DefaultUserCacheTTL  = time.Minute
	DefaultUserCacheSize = 10_000
)

// loadTimeout bounds one tenant fetch. It is detached from the caller that
// started it, because every caller waiting on the same user shares it.
const loadTimeout = 15 * time.Second

// userCache keeps users (with roles) as the tenant has them, so the hot
// lookups (/v1/me and the profile endpoint, one per order) do not each cost
// two Management API calls, which is rate limited tenant-wide. Entries live
// for ttl, the least recently used goes when there are max of them, and
// concurrent misses for a user share one fetch.
//
// It only knows about changes made through this replica: invalidate is
// called after every write this service makes to the tenant; another
// replica's write shows here when the entry expires.
type userCache struct {
	ttl   time.Duration
	max   int
	now   func() time.Time
	group singleflight.Group

	mu sync.Mutex
	// gen moves on every invalidation. A fetch stores its result only if
	// no invalidation happened since it began (it may have read the tenant
	// before the write), and fetches are shared only within a generation.
	gen     uint64
	entries map[string]*list.Element // of *cacheEntry
	lru     *list.List               // most recently used first
}

type cacheEntry struct {
	id      string
	user    domain.User
	expires time.Time
}

func newUserCache(ttl time.Duration, maxEntries int) *userCache {
	return &userCache{ttl: ttl, max: maxEntries, now: time.Now, entries: map[string]*list.Element{}, lru: list.New()}
}

// get returns user id from the cache, or from load when absent, expired or
// fresh is set (the result then replaces the cached one).
func (c *userCache) get(ctx context.Context, id string, fresh bool, load func(context.Context, string) (domain.User, error)) (domain.User, error) {
	c.mu.Lock()
	if !fresh {
		if u, ok := c.lookupLocked(id); ok {
			c.mu.Unlock()
			return u, nil
		}
	}
	gen := c.gen
	c.mu.Unlock()

	ch := c.group.DoChan(strconv.FormatUint(gen, 10)+"/"+id, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		u, err := load(lctx, id)
		if err != nil {
			return nil, err // not cached: a failure or an unknown user is asked again
		}
		c.store(id, u, gen)
		return u, nil
	})
	select {
	case <-ctx.Done():
		return domain.User{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return domain.User{}, r.Err
		}
		return cloneUser(r.Val.(domain.User)), nil
	}
}

// peek returns user id if cached and not expired, without loading.
func (c *userCache) peek(id string) (domain.User, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookupLocked(id)
}

func (c *userCache) lookupLocked(id string) (domain.User, bool) {
	el, ok := c.entries[id]
	if !ok {
		return domain.User{}, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, id)
		return domain.User{}, false
	}
	c.lru.MoveToFront(el)
	return cloneUser(e.user), true
}

func (c *userCache) store(id string, u domain.User, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.max <= 0 {
		return
	}
	e := &cacheEntry{id: id, user: cloneUser(u), expires: c.now().Add(c.ttl)}
	if el, ok := c.entries[id]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[id] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).id)
	}
}

// invalidate drops user id and keeps fetches already under way from
// storing what they read.
func (c *userCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.entries[id]; ok {
		c.lru.Remove(el)
		delete(c.entries, id)
	}
}

// cloneUser keeps callers from sharing the cached entry's slices.
func cloneUser(u domain.User) domain.User {
	u.Roles = slices.Clone(u.Roles)
	if u.ShippingAddress != nil {
		a := *u.ShippingAddress
		u.ShippingAddress = &a
	}
	return u
}
