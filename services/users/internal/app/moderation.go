package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// stored is an intent with the revision it is stored at.
type stored struct {
	m   domain.Moderation
	rev uint64
}

// SetBlocked blocks or unblocks a user: the tenant's flag, then (for a block)
// the revocation of every token issued up to the moment the tenant confirmed,
// then the event. See domain.Moderation for why this is safe to retry and
// never leaves a block without its revocation and event: the intent is stored
// before anything else happens, and RunReconciler finishes intents whose
// request failed part-way.
//
// Calling it again with the same state finishes an unfinished intent, or is a
// no-op when the user already is in that state.
func (s *Service) SetBlocked(ctx context.Context, id string, blocked bool) (domain.User, error) {
	u, err := s.User(ctx, id)
	if err != nil {
		return domain.User{}, err
	}
	m, rev, err := s.begin(ctx, u, blocked)
	if err != nil {
		return domain.User{}, err
	}
	// The caller's identity (for the event) stays in ctx, its cancellation
	// does not: a client hanging up must not stop the sequence half-way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.stepTimeout)
	defer cancel()
	if m.Done() {
		u.Blocked = blocked
		return u, nil
	}
	if _, err := s.complete(ctx, m, rev); err != nil {
		return domain.User{}, err
	}
	u.Blocked = blocked
	return u, nil
}

// begin returns the intent to complete: the stored one when it already asks
// for this state (a retry), else a new one.
func (s *Service) begin(ctx context.Context, u domain.User, blocked bool) (domain.Moderation, uint64, error) {
	st, err := cas.Retry(func() (stored, error) {
		cur, rev, err := s.mods.Get(ctx, u.ID)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return stored{}, err
		}
		if rev != 0 && cur.Blocked == blocked && (!cur.Done() || u.Blocked == blocked) {
			return stored{cur, rev}, nil
		}
		if rev == 0 && !blocked && !u.Blocked {
			// Never blocked: nothing to undo, and no event to tell.
			return stored{m: domain.Moderation{UserID: u.ID, TenantDone: true, EventDone: true}}, nil
		}
		// A new intent; it supersedes an unfinished opposite one.
		m := domain.Moderation{
			UserID:      u.ID,
			Blocked:     blocked,
			RequestedAt: s.now().UTC(),
			RevokedAt:   cur.RevokedAt,
		}
		nrev, err := s.mods.Put(ctx, m, rev)
		if errors.Is(err, domain.ErrConflict) {
			return stored{}, cas.Lost(err)
		}
		return stored{m, nrev}, err
	})
	if err != nil {
		return domain.Moderation{}, 0, fmt.Errorf("user %s: block state: %w", u.ID, err)
	}
	return st.m, st.rev, nil
}

// complete performs the steps of m that are not done yet, recording each.
func (s *Service) complete(ctx context.Context, m domain.Moderation, rev uint64) (domain.Moderation, error) {
	var err error
	if !m.TenantDone {
		if !m.Blocked {
			// Tokens the tenant issues after the unblock must carry an iat
			// (whole seconds) after the revocation instant, or they would be
			// rejected as revoked; waiting is at most one second, and only
			// right after a block.
			if d := m.FreshTokensAfter().Sub(s.now()); d > 0 {
				if err := s.sleep(ctx, d); err != nil {
					return m, err
				}
			}
			// Validators refuse tokens issued within their leeway after the
			// revocation (the tenant's clock may run ahead); the lift, taken
			// before the tenant unblocks, lets the fresh ones through.
			// Repeating it (a retry) only moves it later.
			if err := s.revoker.Lift(ctx, m.UserID, s.now().UTC()); err != nil {
				return m, fmt.Errorf("revocation lift: %w", err)
			}
		}
		err = s.dir.SetBlocked(ctx, m.UserID, m.Blocked)
		// Also after a failure: the tenant may have applied it anyway.
		s.users.invalidate(m.UserID)
		if err != nil {
			return m, fmt.Errorf("tenant: %w", err)
		}
		// Taken after the tenant confirmed: every token issued before the
		// block has an iat at or before this instant.
		m.At = s.now().UTC()
		m.TenantDone = true
		if m, rev, err = s.record(ctx, m, rev); err != nil {
			return m, err
		}
	}
	if m.Blocked && !m.RevocationDone {
		if err := s.revoker.Revoke(ctx, m.UserID, m.At); err != nil {
			return m, fmt.Errorf("revocation: %w", err)
		}
		m.RevocationDone = true
		if m.At.After(m.RevokedAt) {
			m.RevokedAt = m.At
		}
		if m, rev, err = s.record(ctx, m, rev); err != nil {
			return m, err
		}
	}
	if !m.EventDone {
		if err := s.events.PublishModeration(ctx, m); err != nil {
			return m, fmt.Errorf("event: %w", err)
		}
		m.EventDone = true
		if m, _, err = s.record(ctx, m, rev); err != nil {
			return m, err
		}
	}
	return m, nil
}

// record stores m's progress. When someone else advanced the same intent
// meanwhile the two are merged; when a newer intent replaced it, the caller
// gets ErrConflict and stops (the newer one decides the user's state).
func (s *Service) record(ctx context.Context, m domain.Moderation, rev uint64) (domain.Moderation, uint64, error) {
	_, err := cas.Retry(func() (struct{}, error) {
		nrev, err := s.mods.Put(ctx, m, rev)
		if err == nil {
			rev = nrev
			return struct{}{}, nil
		}
		if !errors.Is(err, domain.ErrConflict) {
			return struct{}{}, err
		}
		lost := cas.Lost(err)
		cur, crev, err := s.mods.Get(ctx, m.UserID)
		if err != nil {
			return struct{}{}, err
		}
		if !cur.SameIntent(m) {
			return struct{}{}, fmt.Errorf("user %s: superseded by a newer block or unblock: %w", m.UserID, domain.ErrConflict)
		}
		m, rev = m.Merge(cur), crev
		return struct{}{}, lost
	})
	if errors.Is(err, cas.ErrContended) {
		err = fmt.Errorf("user %s: recording progress: %w", m.UserID, err)
	}
	return m, rev, err
}

// Reconcile finishes every unfinished intent (after a crash, a NATS or tenant
// outage, or a request whose client gave up). ctx should carry the service's
// own identity for the events (natsauth.AsService). It returns the first
// error but tries every intent.
func (s *Service) Reconcile(ctx context.Context) error {
	ids, err := s.mods.Unfinished(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		m, rev, err := s.mods.Get(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m.Done() || s.now().Sub(m.RequestedAt) < s.reconcileGrace {
			// A fresh intent is most likely still being completed by its
			// request, which publishes with the caller's identity.
			continue
		}
		if _, err := s.complete(ctx, m, rev); err != nil && !errors.Is(err, domain.ErrConflict) {
			errs = append(errs, fmt.Errorf("user %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
