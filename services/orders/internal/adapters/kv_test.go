package adapters

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

func newStores(t *testing.T) (*OrderStore, *IdempotencyStore) {
	t.Helper()
	js := natstest.JetStream(t)
	orders, idem, err := EnsureBuckets(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A second call must be a no-op (every replica runs it at start-up).
	if _, _, err := EnsureBuckets(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	return NewOrderStore(set(OrdersBucket, orders)), NewIdempotencyStore(set(IdempotencyBucket, idem))
}

// set returns a holder with kv set, as the set-up step leaves it.
func set(name string, kv *platform.Bucket) *platform.LazyBucket {
	l := platform.NewLazyBucket(name)
	l.Set(kv)
	return l
}

func order(user string, at time.Time) domain.Order {
	o, err := domain.NewOrder(app.NewUUID(), user, []domain.LineRequest{{SKU: "mug", Quantity: 1}}, domain.SeedCatalog(),
		&domain.Address{Line1: "1 Main St", City: "Berlin", PostalCode: "10115", Country: "DE"}, at)
	if err != nil {
		panic(err)
	}
	return o
}

func TestOrderStoreCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStores(t)
	o := order("auth0|alice", time.Now())
	rev, err := s.Create(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, o); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("second create: want ErrConflict, got %v", err)
	}
	got, grev, err := s.Get(ctx, o.ID)
	if err != nil || grev != rev || got.UserID != o.UserID || got.ShippingAddress == nil || got.ShippingAddress.City != "Berlin" || got.TotalCents != 1200 {
		t.Fatalf("get: %+v rev=%d err=%v", got, grev, err)
	}
	got.Status = domain.StatusPaid
	if _, err := s.Update(ctx, got, rev); err != nil {
		t.Fatal(err)
	}
	// The same stale revision again must lose.
	got.Status = domain.StatusCancelled
	if _, err := s.Update(ctx, got, rev); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale update: want ErrConflict, got %v", err)
	}
	for _, id := range []string{app.NewUUID(), "*", ">", "u.*", "", "not-a-uuid"} {
		if _, _, err := s.Get(ctx, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("get %q: want ErrNotFound, got %v", id, err)
		}
	}
}

func TestOrderStoreListByUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStores(t)
	base := time.Now()
	var aliceIDs []string
	for i := range 3 {
		o := order("auth0|alice", base.Add(time.Duration(i)*time.Second))
		aliceIDs = append(aliceIDs, o.ID)
		if _, err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create(ctx, order("auth0|bob", base)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListByUser(ctx, "auth0|alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("want 3 orders, got %d", len(got))
	}
	for i, o := range got {
		if o.ID != aliceIDs[i] || o.UserID != "auth0|alice" {
			t.Fatalf("order %d: %s of %s", i, o.ID, o.UserID)
		}
	}
	none, err := s.ListByUser(ctx, "auth0|nobody")
	if err != nil || len(none) != 0 {
		t.Fatalf("want none, got %v %v", none, err)
	}
}

func TestOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStores(t)
	a := app.PendingEvent{EventID: app.NewUUID(), Type: app.EventOrderCreated, OrderID: app.NewUUID(), UserID: "auth0|a", OccurredAt: time.Now().UTC()}
	b := app.PendingEvent{EventID: app.NewUUID(), Type: app.EventOrderCancelled, OrderID: a.OrderID, UserID: "auth0|a", Reason: "r", OccurredAt: time.Now().UTC(),
		Sealed: app.SealedEvent{Message: []byte(`{"subject":"orders.events.cancelled"}`), PublishBy: time.Now().Add(time.Hour).UTC().Round(0)}}
	for _, e := range []app.PendingEvent{a, b} {
		if err := s.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// Orders must not show up as outbox entries, nor entries as orders.
	if _, err := s.Create(ctx, order("auth0|a", time.Now())); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := s.Remove(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, a); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	list, err = s.List(ctx)
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], b) {
		t.Fatalf("after remove: %+v %v", list, err)
	}
}

func TestIdempotencyReserveConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, s := newStores(t)
	const n = 20
	var wg sync.WaitGroup
	won := make(chan string, n)
	for range n {
		wg.Go(func() {
			id := app.NewUUID()
			rec, reserved, err := s.Reserve(ctx, "auth0|a", "key with spaces/and*wildcards>", app.IdempotencyRecord{RequestHash: "h", OrderID: id})
			if err != nil {
				t.Error(err)
				return
			}
			if reserved {
				won <- id
			} else if rec.OrderID == id {
				t.Error("lost the race but got its own order id back")
			}
		})
	}
	wg.Wait()
	close(won)
	if len(won) != 1 {
		t.Fatalf("%d reservations won, want 1", len(won))
	}
	// Another user's identical key is independent.
	if _, reserved, err := s.Reserve(ctx, "auth0|b", "key with spaces/and*wildcards>", app.IdempotencyRecord{RequestHash: "h", OrderID: "x"}); err != nil || !reserved {
		t.Fatalf("other user: reserved=%v err=%v", reserved, err)
	}
	if err := s.Release(ctx, "auth0|a", "key with spaces/and*wildcards>"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "auth0|a", "key with spaces/and*wildcards>"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("after release: %v", err)
	}
	if _, reserved, err := s.Reserve(ctx, "auth0|a", "key with spaces/and*wildcards>", app.IdempotencyRecord{RequestHash: "h2"}); err != nil || !reserved {
		t.Fatalf("re-reserve: reserved=%v err=%v", reserved, err)
	}
}

func TestStoresAnswerUnavailableUntilSetUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := platform.NewLazyBucket(OrdersBucket)
	s := NewOrderStore(b)
	if _, _, err := s.Get(ctx, app.NewUUID()); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("unbound get: %v", err)
	}
	if _, err := s.Create(ctx, order("auth0|a", time.Now())); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("unbound create: %v", err)
	}
	js := natstest.JetStream(t)
	kv, _, err := EnsureBuckets(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.Set(kv)
	if _, err := s.Create(ctx, order("auth0|a", time.Now())); err != nil {
		t.Fatalf("bound create: %v", err)
	}
}
