// Package app holds the orders use cases, one file each (place, query,
// cancel, status, block, relay), and declares in deps.go the interfaces they
// need from adapters (storage, messaging, the users and billing services).
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Deps is what the Service needs. Orders, Outbox, Idempotency, Publisher, Profiles,
// Billing and Identity are required.
type Deps struct {
	Catalog     *domain.Catalog // default domain.SeedCatalog()
	Orders      Orders
	Outbox      Outbox
	Idempotency Idempotency
	Publisher   Publisher
	Profiles    Profiles
	Billing     Billing
	Identity    ServiceIdentity
	Live        LiveUpdates      // default: none sent
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // default time.Now
	NewID       func() string    // default random UUIDv4

	// IdempotencyWait bounds how long a request that finds its key claimed by
	// an in-flight request waits for that request's order (default 5 s).
	IdempotencyWait time.Duration
	// RelayGrace: outbox entries younger than this are left to the request that
	// wrote them (default 5 s); an entry whose order never appeared is dropped
	// after it.
	RelayGrace time.Duration
}

// Service implements the orders use cases.
type Service struct {
	cfg Deps
	log *slog.Logger
}

// New checks cfg and returns a Service.
func New(cfg Deps) (*Service, error) {
	if cfg.Catalog == nil {
		cfg.Catalog = domain.SeedCatalog()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = NewUUID
	}
	if cfg.Live == nil {
		cfg.Live = noLive{}
	}
	if cfg.IdempotencyWait <= 0 {
		cfg.IdempotencyWait = 5 * time.Second
	}
	if cfg.RelayGrace <= 0 {
		cfg.RelayGrace = 5 * time.Second
	}
	switch {
	case cfg.Orders == nil, cfg.Outbox == nil, cfg.Idempotency == nil, cfg.Publisher == nil:
		return nil, errors.New("app: Orders, Outbox, Idempotency and Publisher are required")
	case cfg.Profiles == nil, cfg.Billing == nil, cfg.Identity == nil:
		return nil, errors.New("app: Profiles, Billing and Identity are required")
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

type noLive struct{}

func (noLive) OrderStatus(context.Context, domain.Order) {}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Catalog returns the products for sale.
func (s *Service) Catalog() []domain.Product { return s.cfg.Catalog.Products() }

// Caller is who a use case acts for, derived from verified claims by a port.
type Caller struct {
	Subject string
	// OrgID is the organization the caller's token was issued for ("" none).
	OrgID string
	// ReadAll: the caller may read any user's orders (read:all-orders) —
	// of its organization only when it has one.
	ReadAll bool
}

// Owns reports whether o is the caller's own: placed by the same user under
// the same organization (or both under none). Auth0's rule for an API is to
// enforce org_id when a token carries one; an order placed under an
// organization is likewise invisible to a token of none.
func (c Caller) Owns(o domain.Order) bool { return o.UserID == c.Subject && o.OrgID == c.OrgID }

// Sees reports whether the caller may read o: its own, or with readAll any
// order of its organization (every order when the token names none:
// platform support, which is not a member of the customers' organizations).
func (c Caller) Sees(o domain.Order, readAll bool) bool {
	if !readAll {
		return c.Owns(o)
	}
	return c.OrgID == "" || o.OrgID == c.OrgID
}
