// Package adapters implements the application's interfaces: the tenant over
// the Management API, KV stores, the revocation writer and the event
// publisher.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/authmesh/authmesh/services/users/internal/adapters/mgmt"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// Tenant is the tenant's user directory (app.Directory) over the Management API.
type Tenant struct{ c *mgmt.Client }

// NewTenant returns the directory.
func NewTenant(c *mgmt.Client) *Tenant { return &Tenant{c: c} }

// mapErr gives Management API failures the domain's meaning; the detail stays
// in the chain for the log.
func mapErr(err error) error {
	var e *mgmt.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mgmt.ErrNotFound):
		return fmt.Errorf("%w: %w", domain.ErrNotFound, err)
	case errors.As(err, &e) && e.Temporary():
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	case errors.Is(err, mgmt.ErrUnauthorized), errors.Is(err, mgmt.ErrNoToken):
		// The tenant refuses this service's credentials even with a fresh
		// token, or none can be had: nothing the caller did, and it may pass
		// (a key rotation settling, the token endpoint coming back).
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	default:
		return err
	}
}

func toUser(u *mgmt.User) domain.User {
	return domain.User{ID: u.UserID, Email: u.Email, Name: u.Name, Blocked: u.Blocked}
}

// ListUsers implements app.Directory.
func (t *Tenant) ListUsers(ctx context.Context, page, perPage int) (domain.Page, error) {
	l, err := t.c.ListUsers(ctx, mgmt.ListUsersParams{Page: page, PerPage: perPage, IncludeTotals: true})
	if err != nil {
		return domain.Page{}, mapErr(err)
	}
	out := domain.Page{Page: page, PerPage: perPage, Total: l.Total, Users: make([]domain.User, 0, len(l.Users))}
	for i := range l.Users {
		out.Users = append(out.Users, toUser(&l.Users[i]))
	}
	return out, nil
}

// GetUser implements app.Directory.
func (t *Tenant) GetUser(ctx context.Context, id string) (domain.User, error) {
	u, err := t.c.GetUser(ctx, id)
	if err != nil {
		return domain.User{}, mapErr(err)
	}
	roles, err := t.c.GetUserRoles(ctx, id)
	if err != nil {
		return domain.User{}, mapErr(err)
	}
	out := toUser(u)
	out.Roles = make([]string, 0, len(roles))
	for _, r := range roles {
		out.Roles = append(out.Roles, r.Name)
	}
	slices.Sort(out.Roles)
	return out, nil
}

// SetBlocked implements app.Directory.
func (t *Tenant) SetBlocked(ctx context.Context, id string, blocked bool) error {
	_, err := t.c.UpdateUser(ctx, id, mgmt.UserUpdate{Blocked: &blocked})
	return mapErr(err)
}

// ReplaceRoles implements app.Directory: names are mapped to role ids from
// the tenant's role list, then the difference to the user's current roles is
// assigned and removed (both idempotent in Auth0, so a retry converges).
func (t *Tenant) ReplaceRoles(ctx context.Context, id string, names []string) ([]string, error) {
	all, err := t.c.ListRoles(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	byName := make(map[string]string, len(all))
	for _, r := range all {
		byName[r.Name] = r.ID
	}
	var want, unknown []string
	for _, n := range names {
		rid, ok := byName[n]
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		want = append(want, rid)
	}
	if len(unknown) > 0 {
		return nil, domain.UnknownRolesError(unknown)
	}
	current, err := t.c.GetUserRoles(ctx, id)
	if err != nil {
		return nil, mapErr(err)
	}
	var have, remove []string
	for _, r := range current {
		have = append(have, r.ID)
		if !slices.Contains(want, r.ID) {
			remove = append(remove, r.ID)
		}
	}
	var add []string
	for _, rid := range want {
		if !slices.Contains(have, rid) {
			add = append(add, rid)
		}
	}
	if err := t.c.AssignUserRoles(ctx, id, add); err != nil {
		return nil, mapErr(err)
	}
	if err := t.c.RemoveUserRoles(ctx, id, remove); err != nil {
		return nil, mapErr(err)
	}
	out := slices.Clone(names)
	slices.Sort(out)
	return out, nil
}
