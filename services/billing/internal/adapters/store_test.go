package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// startJetStream is billing's own account on an in-process NATS with the
// mesh's accounts and permissions.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := meshtest.Connect(t, meshtest.Start(t), mesh.Billing)
	return js
}

func invoice(user, order string, at time.Time) domain.Invoice {
	return domain.Invoice{ID: domain.InvoiceID(order), OrderID: order, UserID: user, Status: domain.StatusOpen,
		AmountCents: 100, Currency: "EUR", CreatedAt: at}
}

func ids(invs []domain.Invoice) []string {
	var out []string
	for _, inv := range invs {
		out = append(out, inv.OrderID)
	}
	return out
}

// TestStoreListsThroughUserIndex: a user's list reads only their invoices
// (newest first), skips an index key whose invoice was never written, and
// invoices stored before the index existed are indexed at start-up.
func TestStoreListsThroughUserIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js := startJetStream(t)

	// An invoice from before the index: a record without index key or marker.
	legacy, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: InvoiceBucket, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Add(-time.Hour)
	b, _ := json.Marshal(toRecord(invoice("auth0|alice", "old", t0)))
	if _, err := legacy.Create(ctx, "old", b); err != nil {
		t.Fatal(err)
	}

	kv, err := EnsureBuckets(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(set(kv))
	for i, inv := range []domain.Invoice{
		invoice("auth0|alice", "a1", t0.Add(time.Minute)),
		invoice("auth0|bob", "b1", t0.Add(2*time.Minute)),
		invoice("auth0|alice", "a2", t0.Add(3*time.Minute)),
	} {
		if err := s.Create(ctx, inv); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	// A crash between the index key and the invoice leaves a dangling key.
	if _, err := kv.Put(ctx, userIndexKey("auth0|alice", "lost"), []byte("1")); err != nil {
		t.Fatal(err)
	}

	got, err := s.List(ctx, app.Filter{UserID: "auth0|alice"})
	if err != nil || !slices.Equal(ids(got), []string{"a2", "a1", "old"}) {
		t.Fatalf("alice's invoices: %v, %v", ids(got), err)
	}
	got, err = s.List(ctx, app.Filter{UserID: "auth0|bob"})
	if err != nil || !slices.Equal(ids(got), []string{"b1"}) {
		t.Fatalf("bob's invoices: %v, %v", ids(got), err)
	}
	got, err = s.List(ctx, app.Filter{UserID: "auth0|alice", OrderID: "a1"})
	if err != nil || !slices.Equal(ids(got), []string{"a1"}) {
		t.Fatalf("alice's invoice of a1: %v, %v", ids(got), err)
	}
	for name, f := range map[string]app.Filter{
		"bob's order":       {UserID: "auth0|alice", OrderID: "b1"},
		"no such order":     {UserID: "auth0|alice", OrderID: "zz"},
		"index key, no inv": {UserID: "auth0|alice", OrderID: "lost"},
	} {
		if got, err := s.List(ctx, f); err != nil || len(got) != 0 {
			t.Errorf("%s: %v, %v; want none", name, ids(got), err)
		}
	}
	if got, err = s.List(ctx, app.Filter{UserID: "auth0|carol"}); err != nil || len(got) != 0 {
		t.Fatalf("carol's invoices: %v, %v", ids(got), err)
	}
	// Without a user the bucket is scanned; index keys and the marker are not invoices.
	got, err = s.List(ctx, app.Filter{})
	if err != nil || len(got) != 4 {
		t.Fatalf("all invoices: %v, %v", ids(got), err)
	}
}

// TestStoreCreateRepairsIndex: Create writes the index key and the invoice
// together, so an invoice can be left without its key (a crash, or a failed
// index write); the next Create for the order, which conflicts, writes the
// key again. A void recorded by the orders service has no user and no key.
func TestStoreCreateRepairsIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv, err := EnsureBuckets(ctx, startJetStream(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(set(kv))
	at := time.Now().UTC()
	// The invoice as a Create whose index write was lost leaves it.
	inv := invoice("auth0|alice", "a1", at)
	b, _ := json.Marshal(toRecord(inv))
	if _, err := kv.Create(ctx, inv.OrderID, b); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(ctx, app.Filter{UserID: "auth0|alice"}); err != nil || len(got) != 0 {
		t.Fatalf("before the repair: %v, %v; want none listed", ids(got), err)
	}
	if err := s.Create(ctx, inv); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	if got, err := s.List(ctx, app.Filter{UserID: "auth0|alice"}); err != nil || !slices.Equal(ids(got), []string{"a1"}) {
		t.Fatalf("after the repair: %v, %v; want a1", ids(got), err)
	}

	void, err := domain.NewVoidInvoice("o2", "", at)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, *void); err != nil {
		t.Fatalf("void without a user: %v", err)
	}
	if v, err := s.Get(ctx, "o2"); err != nil || v.Invoice.Status != domain.StatusVoid {
		t.Fatalf("void without a user: %+v, %v", v, err)
	}
}

// set returns a holder with kv set, as the set-up step leaves it.
func set(kv *platform.Bucket) *platform.LazyBucket {
	l := platform.NewLazyBucket(InvoiceBucket)
	l.Set(kv)
	return l
}
