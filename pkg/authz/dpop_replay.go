package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/maphash"
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
//
// It holds two generations of claimed keys: new claims go into the current
// one, which becomes the previous one when it is the longest ttl old, and
// the previous one is dropped then. A key is therefore remembered for at
// least ttl and at most twice that, without per-key expiry bookkeeping or
// sweeps. Keys are held as 128-bit keyed hashes (hash/maphash, seeds drawn
// per cache): two keys sharing one could only make the second refused as a
// replay, never a replay accepted, and the maps hold no pointers for the
// garbage collector to scan.
type MemoryReplayCache struct {
	seeds [2]maphash.Seed
	epoch time.Time
	now   func() time.Time

	mu        sync.Mutex
	cur, prev map[replayID]struct{}
	start     time.Duration // of cur, since epoch
	ttl       time.Duration // the longest asked for
}

// memoryReplayHint sizes each generation up front (16 KiB each): the first
// thousand claims do not grow the maps, and rotation clears a map without
// shrinking it, so a steady load stops growing them altogether.
const memoryReplayHint = 1024

// replayID is a claimed key's 128-bit keyed hash.
type replayID [2]uint64

// NewMemoryReplayCache returns an empty in-memory cache.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		epoch: time.Now(),
		now:   time.Now,
		cur:   make(map[replayID]struct{}, memoryReplayHint),
		prev:  make(map[replayID]struct{}, memoryReplayHint),
	}
}

// Claim implements ReplayCache.
func (m *MemoryReplayCache) Claim(_ context.Context, key string, ttl time.Duration) error {
	return m.claim(m.id(bytesOf(key)), m.now(), ttl)
}

// claimProof claims replayKey(jkt, jti) as Claim does, at now (the proof
// checker's clock, read once per proof) and without building the key
// string: DPoP.Verify's path to a cache in its own process.
func (m *MemoryReplayCache) claimProof(jkt, jti string, now time.Time, ttl time.Duration) error {
	var buf [maxReplayKeyBytes]byte
	return m.claim(m.id(appendReplayKey(buf[:0], jkt, jti)), now, ttl)
}

func (m *MemoryReplayCache) id(key []byte) replayID {
	return replayID{maphash.Bytes(m.seeds[0], key), maphash.Bytes(m.seeds[1], key)}
}

func (m *MemoryReplayCache) claim(id replayID, now time.Time, ttl time.Duration) error {
	t := now.Sub(m.epoch) // monotonic for time.Now's readings
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ttl = max(m.ttl, ttl)
	// Every key in cur was claimed less than ttl after start (else that
	// claim would have rotated): at 2 ttl after start all of them, and those
	// of prev, are at least ttl old.
	if age := t - m.start; age >= m.ttl {
		if age >= 2*m.ttl {
			clear(m.cur)
		}
		m.prev, m.cur = m.cur, m.prev
		clear(m.cur)
		m.start = t
	}
	if _, ok := m.cur[id]; ok {
		return ErrReplayed
	}
	if _, ok := m.prev[id]; ok {
		return ErrReplayed
	}
	m.cur[id] = struct{}{}
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
