package natsauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/cas"
)

// DPoPReplayCache is authz.ReplayCache on a JetStream KV bucket every
// replica of a service shares: a DPoP proof's jti, claimed at one replica,
// is refused at all of them until the bucket's TTL drops it.
//
// A claim is one KV Create, which the stream leader accepts only when the
// key does not exist (an expected-last-sequence of 0): atomic, so two
// replicas racing on one proof cannot both win, and never a read that a
// lagging follower could answer.
type DPoPReplayCache struct {
	kv  jetstream.KeyValue
	ttl time.Duration
}

// DPoPReplayBucket is the configuration of a service's replay bucket: ttl is
// the DPoP verifier's ReplayTTL (the proof acceptance window), one history
// entry, replicas as the service's other buckets.
func DPoPReplayBucket(name string, ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: name, Description: "DPoP proof ids seen (RFC 9449 §11.1)",
		History: 1, TTL: ttl, Replicas: replicas, Storage: jetstream.FileStorage,
	}
}

// NewDPoPReplayCache claims keys in kv, whose TTL must be ttl or longer (see
// DPoPReplayBucket): a key that expired sooner than the proof would let the
// proof replay.
func NewDPoPReplayCache(kv jetstream.KeyValue, ttl time.Duration) (*DPoPReplayCache, error) {
	if kv == nil || ttl <= 0 {
		return nil, errors.New("natsauth: DPoP replay cache needs a bucket and its TTL")
	}
	return &DPoPReplayCache{kv: kv, ttl: ttl}, nil
}

// Claim implements authz.ReplayCache.
func (c *DPoPReplayCache) Claim(ctx context.Context, key string, ttl time.Duration) error {
	if ttl > c.ttl {
		return fmt.Errorf("natsauth: the replay bucket keeps keys %v, the verifier needs %v", c.ttl, ttl)
	}
	_, err := c.kv.Create(ctx, key, nil) // the key is the record
	if cas.Conflict(err) {
		return authz.ErrReplayed
	}
	return err
}
