package authz

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache holds verified claims keyed by the SHA-256 of the whole token.
// Only successes are stored, so presenting bad tokens can never push good
// entries out; an entry dies with its token's exp, and the Validator drops it
// when its kid leaves the JWKS. It is sharded to keep lock contention low.
type tokenCache struct {
	shards [cacheShards]cacheShard
	max    int // per shard
}

const cacheShards = 16

type cacheShard struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]*Claims
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{max: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]*Claims)
	}
	return c
}

func (c *tokenCache) shard(k [sha256.Size]byte) *cacheShard { return &c.shards[k[0]%cacheShards] }

func (c *tokenCache) get(k [sha256.Size]byte, now time.Time) (*Claims, bool) {
	s := c.shard(k)
	s.mu.RLock()
	cl, ok := s.m[k]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	if !now.Before(cl.ExpiresAt) {
		c.remove(k)
		return nil, false
	}
	return cl, true
}

func (c *tokenCache) put(k [sha256.Size]byte, cl *Claims) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= c.max {
		// Expired entries go first; if the shard is still full, drop an
		// arbitrary one (map order is randomized) — all entries are valid
		// tokens, so the only way to churn the cache is to hold many of them.
		now := time.Now()
		for key, e := range s.m {
			if !now.Before(e.ExpiresAt) {
				delete(s.m, key)
			}
		}
		for key := range s.m {
			if len(s.m) < c.max {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[k] = cl
}

func (c *tokenCache) remove(k [sha256.Size]byte) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
