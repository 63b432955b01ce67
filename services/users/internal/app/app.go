// Package app holds the users service's use cases. It declares the
// interfaces it needs; internal/adapters implements them.
package app

import (
	"context"
	"errors"
	"fmt"
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

// Revoker rejects a subject's tokens issued at or before at, everywhere.
type Revoker interface {
	Revoke(ctx context.Context, sub string, at time.Time) error
}

// Events publishes user.blocked / user.unblocked with the identity of ctx,
// de-duplicated on the intent.
type Events interface {
	PublishModeration(ctx context.Context, m domain.Moderation) error
}

// Service is the users service's application layer.
type Service struct {
	dir     Directory
	prof    Profiles
	mods    Moderations
	revoker Revoker
	events  Events
	users   *userCache

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// stepTimeout bounds a block/unblock sequence once begun: it is detached
	// from the caller's cancellation so a hung-up client does not leave it
	// half done (the reconciler would finish it, but later).
	stepTimeout time.Duration
	// reconcileGrace leaves fresh intents to their request.
	reconcileGrace time.Duration
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
}

// New returns the Service.
func New(d Deps) (*Service, error) {
	if d.Directory == nil || d.Profiles == nil || d.Moderations == nil || d.Revoker == nil || d.Events == nil {
		return nil, errors.New("app: every dependency is required")
	}
	if d.UserCacheTTL < 0 || d.UserCacheSize < 0 {
		return nil, errors.New("app: user cache TTL and size must not be negative")
	}
	if d.UserCacheTTL == 0 {
		d.UserCacheTTL = DefaultUserCacheTTL
	}
	if d.UserCacheSize == 0 {
		d.UserCacheSize = DefaultUserCacheSize
	}
	return &Service{
		dir: d.Directory, prof: d.Profiles, mods: d.Moderations, revoker: d.Revoker, events: d.Events,
		users:          newUserCache(d.UserCacheTTL, d.UserCacheSize),
		now:            time.Now,
		sleep:          sleepCtx,
		stepTimeout:    20 * time.Second,
		reconcileGrace: 5 * time.Second,
	}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// User returns a user as the tenant has it now, merged with the local
// profile. It is for administrators and for the writes, which decide on the
// tenant's current state; the read also refreshes the cache Me answers from.
func (s *Service) User(ctx context.Context, id string) (domain.User, error) {
	return s.user(ctx, id, true)
}

// Me returns the caller's own user, merged with the local profile, from a
// tenant read at most Deps.UserCacheTTL old (or newer than this replica's
// last change to the user). It answers GET /v1/me and the profile endpoint,
// asked once per order: reading the tenant every time would spend the
// tenant's Management API rate limit on the same few users.
func (s *Service) Me(ctx context.Context, id string) (domain.User, error) {
	return s.user(ctx, id, false)
}

func (s *Service) user(ctx context.Context, id string, fresh bool) (domain.User, error) {
	if domain.ValidateUserID(id) != nil {
		// Not a possible tenant id, so not a user: no need to ask the tenant.
		return domain.User{}, fmt.Errorf("user %q: %w", id, domain.ErrNotFound)
	}
	u, err := s.users.get(ctx, id, fresh, s.dir.GetUser)
	if err != nil {
		return domain.User{}, err
	}
	if err := s.mergeProfile(ctx, &u); err != nil {
		return domain.User{}, err
	}
	return u, nil
}

func (s *Service) mergeProfile(ctx context.Context, u *domain.User) error {
	p, err := s.prof.Get(ctx, u.ID)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	p.ApplyTo(u)
	return nil
}

// ListUsers returns a page of users merged with their local profiles.
// page is zero-based; perPage is clamped to [1, MaxPerPage] by the caller.
func (s *Service) ListUsers(ctx context.Context, page, perPage int) (domain.Page, error) {
	p, err := s.dir.ListUsers(ctx, page, perPage)
	if err != nil {
		return domain.Page{}, err
	}
	for i := range p.Users {
		if err := s.mergeProfile(ctx, &p.Users[i]); err != nil {
			return domain.Page{}, err
		}
	}
	return p, nil
}

// UpdateProfile changes the caller's local profile and returns the merged user.
func (s *Service) UpdateProfile(ctx context.Context, id string, upd domain.ProfileUpdate) (domain.User, error) {
	if err := upd.Normalize(); err != nil {
		return domain.User{}, err
	}
	// The user's own refresh: what Me answers next is read after the patch.
	s.users.invalidate(id)
	u, err := s.User(ctx, id) // only tenant users have profiles
	if err != nil {
		return domain.User{}, err
	}
	p, err := s.prof.Update(ctx, id, func(p *domain.Profile) error {
		upd.Apply(p)
		p.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return domain.User{}, err
	}
	p.ApplyTo(&u)
	return u, nil
}

// ReplaceRoles makes the user's tenant roles exactly names.
func (s *Service) ReplaceRoles(ctx context.Context, id string, names []string) (domain.User, error) {
	names, err := domain.ValidateRoleNames(names)
	if err != nil {
		return domain.User{}, err
	}
	if _, err := s.User(ctx, id); err != nil {
		return domain.User{}, err
	}
	_, err = s.dir.ReplaceRoles(ctx, id, names)
	// Even a failed replace may have assigned or removed some roles.
	s.users.invalidate(id)
	if err != nil {
		return domain.User{}, err
	}
	return s.User(ctx, id)
}
