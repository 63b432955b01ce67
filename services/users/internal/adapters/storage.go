package adapters

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Storage is the JetStream state the service owns: USERS_EVENTS, the
// users_profiles bucket and the revocation bucket. The service starts before
// NATS is reachable, so Setup runs in the background until it succeeds;
// until then every store answers domain.ErrUnavailable and readiness is 503.
type Storage struct {
	kv  atomic.Pointer[kvRef]
	rev atomic.Pointer[natsauth.RevocationStore]
}

type kvRef struct{ kv jetstream.KeyValue }

var errNotSetUp = fmt.Errorf("%w: JetStream storage is not set up yet", domain.ErrUnavailable)

// Setup creates or updates the stream and buckets idempotently.
func (s *Storage) Setup(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if err := EnsureEventsStream(ctx, js, replicas); err != nil {
		return err
	}
	kv, err := EnsureProfilesBucket(ctx, js, replicas)
	if err != nil {
		return err
	}
	rs, err := natsauth.NewRevocationStore(ctx, js, replicas)
	if err != nil {
		return fmt.Errorf("revocation bucket: %w", err)
	}
	// The durables other services read from USERS_EVENTS (orders-users).
	if err := mesh.ProvisionDurables(ctx, js, mesh.Users); err != nil {
		return err
	}
	s.kv.Store(&kvRef{kv: kv})
	s.rev.Store(rs)
	return nil
}

// Ready reports nil once Setup succeeded.
func (s *Storage) Ready(context.Context) error {
	if s.kv.Load() == nil || s.rev.Load() == nil {
		return errors.New("stream and buckets not set up yet")
	}
	return nil
}

func (s *Storage) bucket() (jetstream.KeyValue, error) {
	r := s.kv.Load()
	if r == nil {
		return nil, errNotSetUp
	}
	return r.kv, nil
}

func (s *Storage) revocations() (*natsauth.RevocationStore, error) {
	r := s.rev.Load()
	if r == nil {
		return nil, errNotSetUp
	}
	return r, nil
}
