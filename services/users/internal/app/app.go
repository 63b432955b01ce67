// Package app holds the users service's use cases. It declares the
// interfaces it needs; internal/adapters implements them.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Service is the users service's application layer.
type Service struct {
	dir     Directory
	prof    Profiles
	mods    Moderations
	revoker Revoker
	events  Events
	users   *userCache
	log     *slog.Logger

	// tenantWait bounds how long the caller's own reads wait for the tenant
	// before answering from the snapshot; tenantDownFor is how long after a
	// failed read they go to the snapshot without asking (a tenant-wide
	// outage or rate limit would otherwise cost every request the wait).
	tenantWait    time.Duration
	tenantDownFor time.Duration
	// tenantDownUntil is a UnixNano instant; 0 when the tenant answered last.
	tenantDownUntil atomic.Int64

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// stepTimeout bounds a block/unblock sequence once begun: it is detached
	// from the caller's cancellation so a hung-up client does not leave it
	// half done (the reconciler would finish it, but later).
	stepTimeout time.Duration
	// reconcileGrace leaves fresh intents to their request.
	reconcileGrace time.Duration
}

// Defaults of Deps.TenantWait and Deps.TenantDownFor. The wait stays well
// under orders' 5 s budget for the profile request.
const (
	DefaultTenantWait    = 2 * time.Second
	DefaultTenantDownFor = 5 * time.Second
)

// New returns the Service.
func New(d Deps) (*Service, error) {
	if d.Directory == nil || d.Profiles == nil || d.Moderations == nil || d.Revoker == nil || d.Events == nil {
		return nil, errors.New("app: every dependency is required")
	}
	if d.UserCacheTTL < 0 || d.UserCacheSize < 0 || d.TenantWait < 0 || d.TenantDownFor < 0 {
		return nil, errors.New("app: user cache and tenant wait settings must not be negative")
	}
	if d.TenantWait == 0 {
		d.TenantWait = DefaultTenantWait
	}
	if d.TenantDownFor == 0 {
		d.TenantDownFor = DefaultTenantDownFor
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
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
		log:            d.Logger,
		tenantWait:     d.TenantWait,
		tenantDownFor:  d.TenantDownFor,
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
// last change to the user). It answers GET /v1/me: reading the tenant every
// time would spend the tenant's Management API rate limit on the same few
// users.
//
// When the tenant cannot be reached (network, 5xx, 429 after retries, or no
// answer within Deps.TenantWait) Me answers from the user's last snapshot,
// which every successful tenant read stores with the profile; without one
// it fails with domain.ErrUnavailable.
func (s *Service) Me(ctx context.Context, id string) (domain.User, error) {
	return s.me(ctx, id)
}

// Profile is Me for the profile endpoint, which orders asks once per order
// for the shipping address: when the tenant is unreachable and there is no
// snapshot either, it still answers with what the service has itself (the
// id and the local profile), leaving email and roles empty.
func (s *Service) Profile(ctx context.Context, id string) (domain.User, error) {
	u, err := s.me(ctx, id)
	if !errors.Is(err, errNoSnapshot) {
		return u, err
	}
	u = domain.User{ID: id}
	if err := s.mergeProfile(ctx, &u); err != nil {
		return domain.User{}, err
	}
	return u, nil
}

// errNoSnapshot: the tenant is unreachable and never answered for the user.
var errNoSnapshot = fmt.Errorf("tenant unreachable and no snapshot of the user: %w", domain.ErrUnavailable)

func (s *Service) me(ctx context.Context, id string) (domain.User, error) {
	if domain.ValidateUserID(id) != nil {
		return domain.User{}, fmt.Errorf("user %q: %w", id, domain.ErrNotFound)
	}
	u, ok := s.users.peek(id)
	if !ok {
		var tenantErr error
		if s.tenantDown() {
			tenantErr = errors.New("tenant failed recently")
		} else {
			wctx, cancel := context.WithTimeout(ctx, s.tenantWait)
			u, tenantErr = s.users.get(wctx, id, false, s.readTenant)
			cancel()
			switch {
			case tenantErr == nil:
			case ctx.Err() != nil:
				return domain.User{}, ctx.Err()
			case errors.Is(tenantErr, domain.ErrUnavailable), errors.Is(tenantErr, context.DeadlineExceeded):
				// The read goes on in the background (shared, detached) and
				// fills the cache if the tenant answers after all.
				s.markTenantDown()
			default:
				return domain.User{}, tenantErr
			}
		}
		if tenantErr != nil {
			return s.fromSnapshot(ctx, id, tenantErr)
		}
	}
	if err := s.mergeProfile(ctx, &u); err != nil {
		return domain.User{}, err
	}
	return u, nil
}

// fromSnapshot answers the caller's own read from the stored snapshot.
func (s *Service) fromSnapshot(ctx context.Context, id string, tenantErr error) (domain.User, error) {
	p, err := s.prof.Get(ctx, id)
	switch {
	case errors.Is(err, domain.ErrNotFound), err == nil && p.Tenant == nil:
		return domain.User{}, fmt.Errorf("user %q: %w (%v)", id, errNoSnapshot, tenantErr)
	case err != nil:
		return domain.User{}, err
	}
	u := p.Tenant.User(id)
	p.ApplyTo(&u)
	return u, nil
}

func (s *Service) tenantDown() bool {
	until := s.tenantDownUntil.Load()
	return until != 0 && s.now().UnixNano() < until
}

func (s *Service) markTenantDown() {
	s.tenantDownUntil.Store(s.now().Add(s.tenantDownFor).UnixNano())
}

// readTenant reads the user from the tenant and keeps the result as the
// user's snapshot.
func (s *Service) readTenant(ctx context.Context, id string) (domain.User, error) {
	at := s.now().UTC()
	u, err := s.dir.GetUser(ctx, id)
	if err != nil {
		return domain.User{}, err
	}
	s.tenantDownUntil.Store(0)
	if err := s.saveSnapshot(ctx, id, domain.SnapshotOf(u, at)); err != nil {
		// The read itself succeeded; only a later outage would miss it.
		s.log.WarnContext(ctx, "could not save the tenant snapshot of a user", slog.String("user_id", id), slog.String("error", err.Error()))
	}
	return u, nil
}

// errSnapshotKept stops a profile update that would change nothing (or
// replace a newer snapshot).
var errSnapshotKept = errors.New("snapshot kept")

func (s *Service) saveSnapshot(ctx context.Context, id string, snap domain.TenantSnapshot) error {
	_, err := s.prof.Update(ctx, id, func(p *domain.Profile) error {
		if old := p.Tenant; old != nil && (old.ReadAt.After(snap.ReadAt) || old.SameAs(snap)) {
			return errSnapshotKept
		}
		p.Tenant = &snap
		return nil
	})
	if errors.Is(err, errSnapshotKept) {
		return nil
	}
	return err
}

func (s *Service) user(ctx context.Context, id string, fresh bool) (domain.User, error) {
	if domain.ValidateUserID(id) != nil {
		// Not a possible tenant id, so not a user: no need to ask the tenant.
		return domain.User{}, fmt.Errorf("user %q: %w", id, domain.ErrNotFound)
	}
	u, err := s.users.get(ctx, id, fresh, s.readTenant)
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
