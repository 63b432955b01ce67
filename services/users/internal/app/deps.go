package app

// What the use cases need from outside (adapters implement these): the
// tenant's directory, storage, revocations and events.

import (
	"context"
	"log/slog"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Directory is the tenant's user store (Auth0's Management API).
type Directory interface {
	// ListUsers returns one page (zero-based) of users, without roles.
	ListUsers(ctx context.Context, page, perPage int) (domain.Page, error)
	// GetUser returns a user with roles; domain.ErrNotFound when unknown.
	GetUser(ctx context.Context, id string) (domain.User, error)
	// SetBlocked sets the tenant's blocked flag (idempotent).
	SetBlocked(ctx context.Context, id string, blocked bool) error
	// ReplaceRoles makes the user's roles exactly names and returns them;
	// an unknown role name is a *domain.ValidationError.
	ReplaceRoles(ctx context.Context, id string, names []string) ([]string, error)
}

// Profiles stores local profile data.
type Profiles interface {
	// Get returns the profile; domain.ErrNotFound when there is none.
	Get(ctx context.Context, userID string) (domain.Profile, error)
	// Update applies fn to the current profile (a zero one when there is
	// none) and stores it with compare-and-set, re-running fn on conflicts.
	Update(ctx context.Context, userID string, fn func(*domain.Profile) error) (domain.Profile, error)
}

// Moderations stores block/unblock intents with compare-and-set.
type Moderations interface {
	// Get returns the record and its revision; domain.ErrNotFound when none.
	Get(ctx context.Context, userID string) (domain.Moderation, uint64, error)
	// Put stores m if the stored revision is still rev (0: there is none)
	// and returns the new revision; domain.ErrConflict otherwise.
	Put(ctx context.Context, m domain.Moderation, rev uint64) (uint64, error)
	// Unfinished returns the user ids whose latest intent is not done.
	Unfinished(ctx context.Context) ([]string, error)
}

// Revoker rejects a subject's tokens issued at or before at, everywhere
// (validators also reject those issued within their leeway after it), and
// lifts that extension when the subject is unblocked: tokens issued from
// the lift on pass again.
type Revoker interface {
	Revoke(ctx context.Context, sub string, at time.Time) error
	Lift(ctx context.Context, sub string, at time.Time) error
}

// Events publishes user.blocked / user.unblocked with the identity of ctx,
// de-duplicated on the intent.
type Events interface {
	PublishModeration(ctx context.Context, m domain.Moderation) error
}

// Deps are the Service's collaborators (all required) and the tenant user
// cache's settings (optional).
type Deps struct {
	Directory   Directory
	Profiles    Profiles
	Moderations Moderations
	Revoker     Revoker
	Events      Events

	// UserCacheTTL is how long Me may answer from a tenant read (default
	// DefaultUserCacheTTL): the longest another replica's block or role
	// change goes unseen there.
	UserCacheTTL time.Duration
	// UserCacheSize bounds the cached users (default DefaultUserCacheSize).
	UserCacheSize int
	// TenantWait is how long Me waits for the tenant before answering from
	// the user's last snapshot (default DefaultTenantWait).
	TenantWait time.Duration
	// TenantDownFor is how long Me answers from snapshots without asking
	// the tenant after a failed read (default DefaultTenantDownFor).
	TenantDownFor time.Duration
	// Logger gets what the service swallows (a snapshot it could not save);
	// default: discarded.
	Logger *slog.Logger
}
