package domain

import (
	"strconv"
	"time"
)

// Event types of the users service (docs/conventions.md).
const (
	EventUserBlocked   = "user.blocked"
	EventUserUnblocked = "user.unblocked"
)

// Moderation is the durable record of the latest block or unblock of a user.
//
// A block has three effects in three systems — the tenant's blocked flag,
// the revocation of the user's existing tokens, and the user.blocked event —
// and no transaction spans them. So the intent is written first and each step
// is marked done after it succeeded: whoever picks the record up (a retry of
// the request, or the service's reconciler after a crash) finishes exactly
// what is left, with the same block time and the same event de-duplication
// id. Every step is idempotent, so doing one twice is harmless.
type Moderation struct {
	UserID      string
	Blocked     bool      // the state asked for
	RequestedAt time.Time // identifies this intent
	// At is when the tenant confirmed the change; for a block it is the
	// revocation instant (tokens issued at or before it are rejected).
	At time.Time
	// RevokedAt is the latest completed block's revocation instant, kept
	// across unblocks so an unblock can wait until fresh tokens are
	// distinguishable from revoked ones (iat has one-second resolution).
	RevokedAt time.Time

	TenantDone     bool
	RevocationDone bool
	EventDone      bool
}

// SameIntent reports whether o is the same block or unblock request as m.
func (m Moderation) SameIntent(o Moderation) bool {
	return m.UserID == o.UserID && m.Blocked == o.Blocked && m.RequestedAt.Equal(o.RequestedAt)
}

// Done reports whether every step of the intent has happened.
func (m Moderation) Done() bool {
	return m.TenantDone && (m.RevocationDone || !m.Blocked) && m.EventDone
}

// Merge combines the progress of two copies of the same intent (two workers
// may advance it concurrently).
func (m Moderation) Merge(o Moderation) Moderation {
	if m.At.IsZero() {
		m.At = o.At
	}
	if o.RevokedAt.After(m.RevokedAt) {
		m.RevokedAt = o.RevokedAt
	}
	m.TenantDone = m.TenantDone || o.TenantDone
	m.RevocationDone = m.RevocationDone || o.RevocationDone
	m.EventDone = m.EventDone || o.EventDone
	return m
}

// EventType is the type of the event this intent publishes.
func (m Moderation) EventType() string {
	if m.Blocked {
		return EventUserBlocked
	}
	return EventUserUnblocked
}

// EntityID identifies the intent in the event's Nats-Msg-Id
// ("<type>:<entity id>"). It includes the request time: with the user id
// alone, a block, unblock and block again within the stream's duplicate
// window would lose the second block event.
func (m Moderation) EntityID() string {
	return m.UserID + "@" + strconv.FormatInt(m.RequestedAt.UnixNano(), 10)
}

// FreshTokensAfter is the earliest instant at which the tenant may issue
// tokens again after an unblock: a token's iat is whole seconds, and a token
// must have iat strictly after the revocation instant to be accepted.
func (m Moderation) FreshTokensAfter() time.Time {
	if m.RevokedAt.IsZero() {
		return time.Time{}
	}
	return m.RevokedAt.Truncate(time.Second).Add(time.Second)
}
