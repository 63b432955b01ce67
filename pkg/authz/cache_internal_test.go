package authz

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

func TestTokenCacheBoundedAndExpiring(t *testing.T) {
	t.Parallel()
	c := newTokenCache(64)
	now := time.Now()
	for i := range 1000 {
		c.put(sha256.Sum256([]byte(fmt.Sprint(i))), &Claims{ExpiresAt: now.Add(time.Hour)})
	}
	if n := c.len(); n > 64 {
		t.Errorf("cache holds %d entries, bound 64", n)
	}
	k := sha256.Sum256([]byte("short"))
	c.put(k, &Claims{ExpiresAt: now.Add(time.Second)})
	if _, ok := c.get(k, now); !ok {
		t.Fatal("fresh entry missing")
	}
	if _, ok := c.get(k, now.Add(time.Second)); ok {
		t.Error("entry served at its exp")
	}
	if _, ok := c.get(k, now); ok {
		t.Error("expired entry not removed")
	}
}
