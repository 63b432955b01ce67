package adapters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// ProfilesBucket is the service's KV bucket (docs/conventions.md). It holds
// profiles under "profile.<id>" and block/unblock intents under
// "moderation.<id>", <id> being the user id in base64url without padding
// (ids such as "auth0|123" have characters keys may not).
const ProfilesBucket = "users_profiles"

const (
	profilePrefix    = "profile."
	moderationPrefix = "moderation."
)

func encodeID(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeID(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err
}

// EnsureBuckets creates or updates the service's bucket (idempotent).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) (*platform.Bucket, error) {
	// Reads go to the stream leader: a profile reads back right after it is
	// written, also on a replicated stream (platform.KeyValue).
	kv, err := platform.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      ProfilesBucket,
		Description: "users service: local profiles and block/unblock intents",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, err // names the bucket already
	}
	return kv, nil
}

// casPut stores val under key if its revision is still rev (0: absent).
func casPut(ctx context.Context, kv *platform.Bucket, key string, val []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = kv.Create(ctx, key, val)
	} else {
		n, err = kv.Update(ctx, key, val, rev)
	}
	if cas.Conflict(err) {
		return 0, fmt.Errorf("kv %s: %w", key, domain.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("kv %s: %w: %w", key, domain.ErrUnavailable, err)
	}
	return n, nil
}

// get returns the entry's value and revision; domain.ErrNotFound when absent.
func get(ctx context.Context, kv *platform.Bucket, key string) ([]byte, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("kv %s: %w", key, domain.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("kv %s: %w: %w", key, domain.ErrUnavailable, err)
	}
	return e.Value(), e.Revision(), nil
}

// getRecord reads the JSON record R of userID under prefix, once the
// bucket is ready; what names it in the error for a corrupt one.
func getRecord[R any](ctx context.Context, l *platform.LazyBucket, prefix, what, userID string) (R, uint64, error) {
	var r R
	kv, err := l.Get(ctx)
	if err != nil {
		return r, 0, err
	}
	val, rev, err := get(ctx, kv, prefix+encodeID(userID))
	if err != nil {
		return r, 0, err
	}
	if err := json.Unmarshal(val, &r); err != nil {
		var zero R
		return zero, 0, fmt.Errorf("%s of %s: corrupt record: %w", what, userID, err)
	}
	return r, rev, nil
}

// Profiles stores local profile data (app.Profiles).
type Profiles struct {
	kv *platform.LazyBucket
}

// NewProfiles returns the store on the profiles bucket.
func NewProfiles(kv *platform.LazyBucket) *Profiles { return &Profiles{kv: kv} }

type addressRecord struct {
	Line1      string `json:"line1"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
}

type profileRecord struct {
	UserID          string         `json:"user_id"`
	Name            string         `json:"name,omitempty"`
	ShippingAddress *addressRecord `json:"shipping_address,omitempty"`
	UpdatedAt       time.Time      `json:"updated_at"`
	// Tenant is the last tenant read, kept in the record so that every
	// replica, and a restarted one, can answer while the tenant is away.
	Tenant *tenantRecord `json:"tenant,omitempty"`
}

type tenantRecord struct {
	Email   string    `json:"email,omitempty"`
	Name    string    `json:"name,omitempty"`
	Roles   []string  `json:"roles"`
	Blocked bool      `json:"blocked"`
	ReadAt  time.Time `json:"read_at"`
}

func toProfileRecord(p domain.Profile) profileRecord {
	r := profileRecord{UserID: p.UserID, Name: p.Name, UpdatedAt: p.UpdatedAt}
	if a := p.ShippingAddress; a != nil {
		r.ShippingAddress = &addressRecord{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	if t := p.Tenant; t != nil {
		r.Tenant = &tenantRecord{Email: t.Email, Name: t.Name, Roles: t.Roles, Blocked: t.Blocked, ReadAt: t.ReadAt}
		if r.Tenant.Roles == nil {
			r.Tenant.Roles = []string{}
		}
	}
	return r
}

func (r profileRecord) toDomain() domain.Profile {
	p := domain.Profile{UserID: r.UserID, Name: r.Name, UpdatedAt: r.UpdatedAt}
	if a := r.ShippingAddress; a != nil {
		p.ShippingAddress = &domain.Address{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	if t := r.Tenant; t != nil {
		p.Tenant = &domain.TenantSnapshot{Email: t.Email, Name: t.Name, Roles: t.Roles, Blocked: t.Blocked, ReadAt: t.ReadAt}
	}
	return p
}

func (s *Profiles) get(ctx context.Context, userID string) (domain.Profile, uint64, error) {
	r, rev, err := getRecord[profileRecord](ctx, s.kv, profilePrefix, "profile", userID)
	return r.toDomain(), rev, err
}

// Get implements app.Profiles.
func (s *Profiles) Get(ctx context.Context, userID string) (domain.Profile, error) {
	p, _, err := s.get(ctx, userID)
	return p, err
}

// Update implements app.Profiles with compare-and-set on the entry's revision.
func (s *Profiles) Update(ctx context.Context, userID string, fn func(*domain.Profile) error) (domain.Profile, error) {
	return cas.Retry(func() (domain.Profile, error) {
		p, rev, err := s.get(ctx, userID)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return domain.Profile{}, err
		}
		p.UserID = userID
		if err := fn(&p); err != nil {
			return domain.Profile{}, err
		}
		val, err := json.Marshal(toProfileRecord(p))
		if err != nil {
			return domain.Profile{}, err
		}
		kv, err := s.kv.Get(ctx)
		if err != nil {
			return domain.Profile{}, err
		}
		_, err = casPut(ctx, kv, profilePrefix+encodeID(userID), val, rev)
		if errors.Is(err, domain.ErrConflict) {
			return domain.Profile{}, cas.Lost(err)
		}
		if err != nil {
			return domain.Profile{}, err
		}
		return p, nil
	})
}

// Moderations stores block/unblock intents (app.Moderations).
type Moderations struct {
	kv *platform.LazyBucket
}

// NewModerations returns the store on the profiles bucket.
func NewModerations(kv *platform.LazyBucket) *Moderations { return &Moderations{kv: kv} }

type moderationRecord struct {
	UserID         string    `json:"user_id"`
	Blocked        bool      `json:"blocked"`
	RequestedAt    time.Time `json:"requested_at"`
	At             time.Time `json:"at,omitzero"`
	RevokedAt      time.Time `json:"revoked_at,omitzero"`
	TenantDone     bool      `json:"tenant_done"`
	RevocationDone bool      `json:"revocation_done"`
	EventDone      bool      `json:"event_done"`
}

// Get implements app.Moderations.
func (s *Moderations) Get(ctx context.Context, userID string) (domain.Moderation, uint64, error) {
	r, rev, err := getRecord[moderationRecord](ctx, s.kv, moderationPrefix, "moderation", userID)
	return domain.Moderation(r), rev, err
}

// Put implements app.Moderations.
func (s *Moderations) Put(ctx context.Context, m domain.Moderation, rev uint64) (uint64, error) {
	val, err := json.Marshal(moderationRecord(m))
	if err != nil {
		return 0, err
	}
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return 0, err
	}
	return casPut(ctx, kv, moderationPrefix+encodeID(m.UserID), val, rev)
}

// Unfinished implements app.Moderations. It reads every intent: there is
// one per user ever blocked, which stays small for a moderation log.
func (s *Moderations) Unfinished(ctx context.Context) ([]string, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeysFiltered(ctx, moderationPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("kv %s: list: %w: %w", ProfilesBucket, domain.ErrUnavailable, err)
	}
	var ids []string
	for key := range lister.Keys() {
		id, err := decodeID(strings.TrimPrefix(key, moderationPrefix))
		if err != nil {
			continue // not written by this service
		}
		m, _, err := s.Get(ctx, id)
		if err != nil {
			if errors.Is(err, domain.ErrNotFound) {
				continue
			}
			return nil, err
		}
		if !m.Done() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
