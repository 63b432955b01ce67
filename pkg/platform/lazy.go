package platform

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/authmesh/authmesh/pkg/platform/fault"
)

// ErrNotReady is what a Lazy answers until its value is set: the service
// serves before NATS is reachable, and what a set-up step creates (a bucket,
// a store) is not there yet. It comes wrapped with fault.ErrUnavailable, so
// a service's mapping of that kind (its domain's ErrUnavailable is that kind
// itself) applies; without one, the error handler answers it, after the
// service's mappings, with 503 "unavailable".
var ErrNotReady = errors.New("not set up yet")

// notReadyMapping is the answer to ErrNotReady, after the service's own.
var notReadyMapping = ErrorMapping{Target: ErrNotReady, Status: http.StatusServiceUnavailable,
	Code: CodeUnavailable, Message: "the service is starting; retry later"}

// Lazy holds a value that a set-up step produces once it can (see
// App.SetUp): the routes and stores exist from the start, and answer
// ErrNotReady until it is there.
//
//	bucket := platform.NewLazy[*platform.Bucket]("orders bucket")
//	a.SetUp("orders-bucket", func(ctx context.Context) error {
//		b, err := platform.KeyValue(ctx, a.JetStream, cfg)
//		if err == nil {
//			bucket.Set(b)
//		}
//		return err
//	})
//
// It is safe for concurrent use.
type Lazy[T any] struct {
	name string
	once sync.Once
	set  chan struct{} // closed once v is set
	v    T
}

// NewLazy returns an empty holder; name says what it holds in its errors.
func NewLazy[T any](name string) *Lazy[T] {
	return &Lazy[T]{name: name, set: make(chan struct{})}
}

// Set makes v available. Only the first Set counts.
func (l *Lazy[T]) Set(v T) {
	l.once.Do(func() {
		l.v = v
		close(l.set)
	})
}

// Get returns the value without waiting: ctx's error when ctx has ended,
// an error wrapping fault.ErrUnavailable and ErrNotReady until the value is
// set.
func (l *Lazy[T]) Get(ctx context.Context) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	select {
	case <-l.set:
		return l.v, nil
	default:
		return zero, fmt.Errorf("%s: %w: %w", l.name, fault.ErrUnavailable, ErrNotReady)
	}
}

// LazyBucket is a bucket its service's set-up step creates.
type LazyBucket = Lazy[*Bucket]

// NewLazyBucket returns the empty holder of the bucket called name.
func NewLazyBucket(name string) *LazyBucket { return NewLazy[*Bucket]("bucket " + name) }
