package adapters

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Stream and subjects the service owns (docs/conventions.md).
const (
	EventsStream     = "USERS_EVENTS"
	SubjectBlocked   = "users.events.blocked"
	SubjectUnblocked = "users.events.unblocked"
)

// Events publishes user.blocked / user.unblocked (app.Events).
type Events struct{ js jetstream.JetStream }

// NewEvents returns the publisher.
func NewEvents(js jetstream.JetStream) *Events { return &Events{js: js} }

type moderationData struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
}

// PublishModeration implements app.Events with the identity of ctx (the
// caller's token, or natsauth.AsService's) and Nats-Msg-Id
// "<type>:<intent id>", so a retried publish is dropped by the server.
func (e *Events) PublishModeration(ctx context.Context, m domain.Moderation) error {
	subj := SubjectUnblocked
	if m.Blocked {
		subj = SubjectBlocked
	}
	_, err := natsauth.PublishEvent(ctx, e.js, subj, m.EventType(), m.EntityID(), m.UserID,
		moderationData{UserID: m.UserID, At: m.At.UTC()})
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", m.EventType(), domain.ErrUnavailable, err)
	}
	return nil
}

// Revocations writes to natsauth's revocation bucket (app.Revoker).
type Revocations struct {
	kv *platform.Lazy[*natsauth.RevocationStore]
}

// NewRevocations returns the writer on the revocation bucket.
func NewRevocations(kv *platform.Lazy[*natsauth.RevocationStore]) *Revocations {
	return &Revocations{kv: kv}
}

// Revoke implements app.Revoker.
func (r *Revocations) Revoke(ctx context.Context, sub string, at time.Time) error {
	return r.do(ctx, func(store *natsauth.RevocationStore) error { return store.Revoke(ctx, sub, at) })
}

// Lift implements app.Revoker.
func (r *Revocations) Lift(ctx context.Context, sub string, at time.Time) error {
	return r.do(ctx, func(store *natsauth.RevocationStore) error { return store.Lift(ctx, sub, at) })
}

// do runs write on the bucket once it is ready; a failed write is
// domain.ErrUnavailable.
func (r *Revocations) do(ctx context.Context, write func(*natsauth.RevocationStore) error) error {
	store, err := r.kv.Get(ctx)
	if err != nil {
		return err
	}
	if err := write(store); err != nil {
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	}
	return nil
}
