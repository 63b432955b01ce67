package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// ErrReplayed is what a ReplayCache's Claim returns for a key already claimed.
var ErrReplayed = errors.New("authz: already claimed")

// ReplayCache remembers DPoP proof ids (RFC 9449 §11.1). Claim records key
// for at least ttl and returns nil, or ErrReplayed when key is already
// recorded, atomically: of two replicas claiming one key at once, one wins.
// Any other error means the cache could not answer; the proof is then
// refused with a 503, never accepted unchecked.
//
// Production uses natsauth.NewDPoPReplayCache (a JetStream KV bucket every
// replica shares). MemoryReplayCache is for unit tests and single-process
// tools: a proof replayed at another replica would pass it.
type ReplayCache interface {
	Claim(ctx context.Context, key string, ttl time.Duration) error
}

// MemoryReplayCache is a ReplayCache in one process's memory. Not for
// services with replicas (see ReplayCache).
type MemoryReplayCache struct {
	mu    sync.Mutex
	seen  map[string]time.Time // key → expiry
	sweep time.Time
	now   func() time.Time
}

// NewMemoryReplayCache returns an empty in-memory cache.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{seen: make(map[string]time.Time), now: time.Now}
}

// Claim implements ReplayCache.
func (m *MemoryReplayCache) Claim(_ context.Context, key string, ttl time.Duration) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.After(m.sweep) {
		for k, exp := range m.seen {
			if now.After(exp) {
				delete(m.seen, k)
			}
		}
		m.sweep = now.Add(ttl)
	}
	if exp, ok := m.seen[key]; ok && !now.After(exp) {
		return ErrReplayed
	}
	m.seen[key] = now.Add(ttl)
	return nil
}

// DPoPNonces issues and checks server nonces (RFC 9449 §9) without shared
// state: a nonce is its issue time and an HMAC over it with a key every
// replica holds, so any replica accepts another's nonces, and a nonce's age
// bounds a proof's freshness by the server's clock, not the client's.
type DPoPNonces struct {
	key      []byte
	lifetime time.Duration
	now      func() time.Time
}

// NewDPoPNonces returns nonces MACed with key (at least 32 bytes, the same
// on every replica) and valid for lifetime (e.g. 5 minutes).
func NewDPoPNonces(key []byte, lifetime time.Duration) (*DPoPNonces, error) {
	if len(key) < 32 {
		return nil, errors.New("authz: DPoP nonce key must be at least 32 bytes")
	}
	if lifetime < time.Second || lifetime > time.Hour {
		return nil, errors.New("authz: DPoP nonce lifetime must be within [1s, 1h]")
	}
	return &DPoPNonces{key: append([]byte(nil), key...), lifetime: lifetime, now: time.Now}, nil
}

const nonceMACBytes = 16

// Issue returns a fresh nonce (base64url: 1*NQCHAR).
func (n *DPoPNonces) Issue() string {
	var b [8 + nonceMACBytes]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n.now().UnixMilli()))
	copy(b[8:], n.mac(b[:8]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (n *DPoPNonces) mac(ts []byte) []byte {
	h := hmac.New(sha256.New, n.key)
	h.Write([]byte("dpop-nonce\x00"))
	h.Write(ts)
	return h.Sum(nil)[:nonceMACBytes]
}

// valid reports whether nonce was issued by a holder of the key within the
// lifetime before now (and not after it, beyond a second of skew between
// replicas).
func (n *DPoPNonces) valid(nonce string, now time.Time) bool {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 8+nonceMACBytes {
		return false
	}
	if !hmac.Equal(b[8:], n.mac(b[:8])) {
		return false
	}
	at := time.UnixMilli(int64(binary.BigEndian.Uint64(b[:8])))
	return !at.Before(now.Add(-n.lifetime)) && !at.After(now.Add(time.Second))
}
