package adapters

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Bucket is the part of jetstream.KeyValue the stores use.
type Bucket interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
	// Last and KeysMatching read from the stream leader (platform.Bucket).
	Last(ctx context.Context, filter string) (platform.Entry, error)
	KeysMatching(ctx context.Context, filter string) ([]string, error)
}

// LateBucket is a Bucket whose KeyValue is bound once it exists: the service
// starts serving (and answering /readyz with 503) before NATS is reachable,
// and its stores answer domain.ErrUnavailable until then.
type LateBucket struct {
	name string
	kv   atomic.Pointer[platform.Bucket]
}

// NewLateBucket returns an unbound bucket.
func NewLateBucket(name string) *LateBucket { return &LateBucket{name: name} }

// Bind makes the bucket usable.
func (b *LateBucket) Bind(kv *platform.Bucket) { b.kv.Store(kv) }

// Ready returns nil once bound.
func (b *LateBucket) Ready(context.Context) error {
	if b.kv.Load() == nil {
		return fmt.Errorf("bucket %s not set up yet", b.name)
	}
	return nil
}

func (b *LateBucket) get() (*platform.Bucket, error) {
	p := b.kv.Load()
	if p == nil {
		return nil, fmt.Errorf("bucket %s not set up yet: %w", b.name, domain.ErrUnavailable)
	}
	return p, nil
}

func (b *LateBucket) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv, err := b.get()
	if err != nil {
		return nil, err
	}
	return kv.Get(ctx, key)
}

func (b *LateBucket) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	kv, err := b.get()
	if err != nil {
		return 0, err
	}
	return kv.Create(ctx, key, value, opts...)
}

func (b *LateBucket) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	kv, err := b.get()
	if err != nil {
		return 0, err
	}
	return kv.Update(ctx, key, value, revision)
}

func (b *LateBucket) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	kv, err := b.get()
	if err != nil {
		return 0, err
	}
	return kv.Put(ctx, key, value)
}

func (b *LateBucket) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	kv, err := b.get()
	if err != nil {
		return err
	}
	return kv.Purge(ctx, key, opts...)
}

func (b *LateBucket) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	kv, err := b.get()
	if err != nil {
		return err
	}
	return kv.Delete(ctx, key, opts...)
}

func (b *LateBucket) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	kv, err := b.get()
	if err != nil {
		return nil, err
	}
	return kv.ListKeysFiltered(ctx, filters...)
}

func (b *LateBucket) Last(ctx context.Context, filter string) (platform.Entry, error) {
	kv, err := b.get()
	if err != nil {
		return platform.Entry{}, err
	}
	return kv.Last(ctx, filter)
}

func (b *LateBucket) KeysMatching(ctx context.Context, filter string) ([]string, error) {
	kv, err := b.get()
	if err != nil {
		return nil, err
	}
	return kv.KeysMatching(ctx, filter)
}
