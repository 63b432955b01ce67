// Package adapters implements the app's interfaces on JetStream KV and
// streams, and on the users and billing services over NATS.
package adapters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/cas"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Bucket names (docs/conventions.md).
const (
	OrdersBucket      = "orders"
	IdempotencyBucket = "orders_idempotency"
)

// IdempotencyTTL is how long an Idempotency-Key is remembered.
const IdempotencyTTL = 24 * time.Hour

// EnsureBuckets creates or updates the service's buckets (idempotent). Their
// reads go to the stream leader, so an order reads back right after its 201
// also on a replicated stream (platform.KeyValue).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) (orders, idem *platform.Bucket, err error) {
	if replicas < 1 {
		replicas = 1
	}
	orders, err = platform.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: OrdersBucket, Description: "orders by user, and the event outbox",
		History: 5, Replicas: replicas, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, nil, err
	}
	idem, err = platform.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: IdempotencyBucket, Description: "Idempotency-Key reservations per user",
		TTL: IdempotencyTTL, Replicas: replicas, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, nil, err
	}
	return orders, idem, nil
}

// Key layout of the orders bucket:
//
//	u.<base64url(user id)>.<order id>   the order (one user's orders are one filter)
//	outbox.<order id>.<event id>        an event still owed to ORDERS_EVENTS
//
// Looking an order up by id alone uses the filter u.*.<order id>, which the
// server answers from its subject index, so there is one record per order and
// no second index to keep consistent.
const (
	userPrefix   = "u."
	outboxPrefix = "outbox."
)

// idPattern is what this service issues as ids; anything else cannot name an
// order (and could otherwise smuggle a wildcard into a key filter).
var idPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidID reports whether id has the shape of an order id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

func userToken(userID string) string { return base64.RawURLEncoding.EncodeToString([]byte(userID)) }

func orderKey(userID, id string) string { return userPrefix + userToken(userID) + "." + id }

// OrderStore implements app.Orders and app.Outbox on the orders bucket.
type OrderStore struct {
	kv *platform.LazyBucket
}

var (
	_ app.Orders = (*OrderStore)(nil)
	_ app.Outbox = (*OrderStore)(nil)
)

// NewOrderStore wraps the orders bucket.
func NewOrderStore(kv *platform.LazyBucket) *OrderStore { return &OrderStore{kv: kv} }

// Create implements app.Orders.
func (s *OrderStore) Create(ctx context.Context, o domain.Order) (uint64, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return 0, err
	}
	if !ValidID(o.ID) || o.UserID == "" {
		return 0, fmt.Errorf("create order: bad id or user: %w", domain.ErrValidation)
	}
	b, err := json.Marshal(toRecord(o))
	if err != nil {
		return 0, fmt.Errorf("encode order: %w", err)
	}
	rev, err := kv.Create(ctx, orderKey(o.UserID, o.ID), b)
	if cas.Conflict(err) {
		return 0, fmt.Errorf("order %s exists: %w", o.ID, domain.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("store order: %w: %w", domain.ErrUnavailable, err)
	}
	return rev, nil
}

// Get implements app.Orders.
func (s *OrderStore) Get(ctx context.Context, id string) (domain.Order, uint64, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return domain.Order{}, 0, err
	}
	if !ValidID(id) {
		return domain.Order{}, 0, fmt.Errorf("order %q: %w", id, domain.ErrNotFound)
	}
	e, err := kv.Last(ctx, userPrefix+"*."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return domain.Order{}, 0, fmt.Errorf("order %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Order{}, 0, fmt.Errorf("read order: %w: %w", domain.ErrUnavailable, err)
	}
	return decodeOrder(e.Key, e.Value, e.Revision)
}

func (s *OrderStore) getKey(ctx context.Context, key string) (domain.Order, uint64, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return domain.Order{}, 0, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return domain.Order{}, 0, fmt.Errorf("order key %s: %w", key, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Order{}, 0, fmt.Errorf("read order: %w: %w", domain.ErrUnavailable, err)
	}
	return decodeOrder(key, e.Value(), e.Revision())
}

func decodeOrder(key string, value []byte, rev uint64) (domain.Order, uint64, error) {
	var r orderRecord
	if err := json.Unmarshal(value, &r); err != nil {
		return domain.Order{}, 0, fmt.Errorf("decode order %s: %w", key, err)
	}
	return r.toDomain(), rev, nil
}

// Update implements app.Orders with a compare-and-set on rev.
func (s *OrderStore) Update(ctx context.Context, o domain.Order, rev uint64) (uint64, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(toRecord(o))
	if err != nil {
		return 0, fmt.Errorf("encode order: %w", err)
	}
	nrev, err := kv.Update(ctx, orderKey(o.UserID, o.ID), b, rev)
	if cas.Conflict(err) {
		return 0, fmt.Errorf("order %s changed concurrently: %w", o.ID, domain.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("update order: %w: %w", domain.ErrUnavailable, err)
	}
	return nrev, nil
}

// ListByUser implements app.Orders; only the user's keys are read, as the
// stream leader knows them (an order placed a moment ago is listed).
func (s *OrderStore) ListByUser(ctx context.Context, userID string) ([]domain.Order, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := kv.KeysMatching(ctx, userPrefix+userToken(userID)+".*")
	if err != nil {
		return nil, fmt.Errorf("list keys: %w: %w", domain.ErrUnavailable, err)
	}
	out := make([]domain.Order, 0, len(keys))
	for _, k := range keys {
		o, _, err := s.getKey(ctx, k)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sortOrders(out)
	return out, nil
}

func (s *OrderStore) keys(ctx context.Context, filter string) ([]string, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	l, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w: %w", domain.ErrUnavailable, err)
	}
	defer func() { _ = l.Stop() }()
	seen := map[string]bool{}
	var keys []string
	for k := range l.Keys() {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func outboxKey(e app.PendingEvent) string { return outboxPrefix + e.OrderID + "." + e.EventID }

// Add implements app.Outbox.
func (s *OrderStore) Add(ctx context.Context, e app.PendingEvent) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(pendingRecord{
		EventID: e.EventID, Type: string(e.Type), OrderID: e.OrderID, UserID: e.UserID,
		Reason: e.Reason, OccurredAt: e.OccurredAt, Sealed: e.Sealed.Message, PublishBy: e.Sealed.PublishBy,
	})
	if err != nil {
		return fmt.Errorf("encode outbox entry: %w", err)
	}
	if _, err := kv.Put(ctx, outboxKey(e), b); err != nil {
		return fmt.Errorf("store outbox entry: %w: %w", domain.ErrUnavailable, err)
	}
	return nil
}

// Remove implements app.Outbox. Purge (not Delete) so that no history of
// delivered entries piles up.
func (s *OrderStore) Remove(ctx context.Context, e app.PendingEvent) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, outboxKey(e)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove outbox entry: %w: %w", domain.ErrUnavailable, err)
	}
	return nil
}

// List implements app.Outbox.
func (s *OrderStore) List(ctx context.Context) ([]app.PendingEvent, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := s.keys(ctx, outboxPrefix+">")
	if err != nil {
		return nil, err
	}
	out := make([]app.PendingEvent, 0, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read outbox entry: %w: %w", domain.ErrUnavailable, err)
		}
		var r pendingRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return nil, fmt.Errorf("decode outbox entry %s: %w", k, err)
		}
		out = append(out, app.PendingEvent{
			EventID: r.EventID, Type: app.EventType(r.Type), OrderID: r.OrderID, UserID: r.UserID,
			Reason: r.Reason, OccurredAt: r.OccurredAt, Sealed: app.SealedEvent{Message: r.Sealed, PublishBy: r.PublishBy},
		})
	}
	return out, nil
}

// IdempotencyStore implements app.Idempotency on the orders_idempotency bucket.
type IdempotencyStore struct {
	kv *platform.LazyBucket
}

var _ app.Idempotency = (*IdempotencyStore)(nil)

// NewIdempotencyStore wraps the orders_idempotency bucket.
func NewIdempotencyStore(kv *platform.LazyBucket) *IdempotencyStore { return &IdempotencyStore{kv: kv} }

// The client's key is hashed: it may hold any characters, KV keys may not.
func idemKey(userID, key string) string {
	return userToken(userID) + "." + hashHex(key)
}

// Reserve implements app.Idempotency with a KV create, which exactly one of
// several concurrent callers wins.
func (s *IdempotencyStore) Reserve(ctx context.Context, userID, key string, rec app.IdempotencyRecord) (app.IdempotencyRecord, bool, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return app.IdempotencyRecord{}, false, err
	}
	b, err := json.Marshal(idemRecord{RequestHash: rec.RequestHash, OrderID: rec.OrderID, CreatedAt: rec.CreatedAt})
	if err != nil {
		return app.IdempotencyRecord{}, false, fmt.Errorf("encode idempotency record: %w", err)
	}
	k := idemKey(userID, key)
	type outcome struct {
		rec app.IdempotencyRecord
		won bool
	}
	o, err := cas.Retry(func() (outcome, error) {
		_, err := kv.Create(ctx, k, b)
		if err == nil {
			return outcome{rec, true}, nil
		}
		if !cas.Conflict(err) {
			return outcome{}, fmt.Errorf("reserve idempotency key: %w: %w", domain.ErrUnavailable, err)
		}
		existing, err := s.Get(ctx, userID, key)
		if errors.Is(err, domain.ErrNotFound) {
			return outcome{}, cas.Lost(err) // released between our create and get
		}
		return outcome{existing, false}, err
	})
	if errors.Is(err, cas.ErrContended) {
		return app.IdempotencyRecord{}, false, fmt.Errorf("idempotency key contended: %w", domain.ErrConflict)
	}
	return o.rec, o.won, err
}

// Get implements app.Idempotency.
func (s *IdempotencyStore) Get(ctx context.Context, userID, key string) (app.IdempotencyRecord, error) {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return app.IdempotencyRecord{}, err
	}
	e, err := kv.Get(ctx, idemKey(userID, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return app.IdempotencyRecord{}, fmt.Errorf("idempotency key: %w", domain.ErrNotFound)
	}
	if err != nil {
		return app.IdempotencyRecord{}, fmt.Errorf("read idempotency key: %w: %w", domain.ErrUnavailable, err)
	}
	var r idemRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return app.IdempotencyRecord{}, fmt.Errorf("decode idempotency record: %w", err)
	}
	return app.IdempotencyRecord{RequestHash: r.RequestHash, OrderID: r.OrderID, CreatedAt: r.CreatedAt}, nil
}

// Release implements app.Idempotency.
func (s *IdempotencyStore) Release(ctx context.Context, userID, key string) error {
	kv, err := s.kv.Get(ctx)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, idemKey(userID, key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release idempotency key: %w: %w", domain.ErrUnavailable, err)
	}
	return nil
}
