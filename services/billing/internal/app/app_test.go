package app_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// memStore is an in-memory app.Store with the KV store's semantics: Create
// once per order, Update with compare-and-set on the revision.
type memStore struct {
	mu   sync.Mutex
	recs map[string]app.Versioned
	rev  uint64
	// afterMiss runs once, right after the first Get that finds nothing:
	// the moment the order.created event lands in the race under test.
	afterMiss func(s *memStore)
}

func newMemStore() *memStore { return &memStore{recs: map[string]app.Versioned{}} }

func (s *memStore) Get(_ context.Context, orderID string) (app.Versioned, error) {
	s.mu.Lock()
	v, ok := s.recs[orderID]
	hook := s.afterMiss
	if !ok {
		s.afterMiss = nil
	}
	s.mu.Unlock()
	if !ok {
		if hook != nil {
			hook(s)
		}
		return app.Versioned{}, domain.ErrNotFound
	}
	return v, nil
}

func (s *memStore) Create(_ context.Context, inv domain.Invoice) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[inv.OrderID]; ok {
		return domain.ErrConflict
	}
	s.rev++
	s.recs[inv.OrderID] = app.Versioned{Invoice: inv, Revision: s.rev}
	return nil
}

func (s *memStore) Update(_ context.Context, inv domain.Invoice, revision uint64, _ ...app.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs[inv.OrderID].Revision != revision {
		return app.ErrStale
	}
	s.rev++
	s.recs[inv.OrderID] = app.Versioned{Invoice: inv, Revision: s.rev}
	return nil
}

func (s *memStore) List(context.Context, app.Filter) ([]domain.Invoice, error) {
	return nil, errors.New("not used")
}

func (s *memStore) status(orderID string) domain.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recs[orderID].Invoice.Status
}

type nopOutbox struct{}

func (nopOutbox) Flush(context.Context, string) error { return nil }
func (nopOutbox) Resume(context.Context, string)      {}

// The invoice is created (order.created arrives) after VoidOrder looked and
// found none but before it records a void one: whoever may void it still
// does, and only someone else's invoice is "not found".
func TestVoidOrderInvoiceCreatedMeanwhile(t *testing.T) {
	t.Parallel()
	const order = "ord_1"
	alice := app.Caller{Subject: "auth0|alice"}
	tests := []struct {
		name       string
		caller     app.Caller
		owner      string
		wantErr    error
		wantStatus domain.Status
	}{
		{"owner cancels own fresh order", alice, "auth0|alice", nil, domain.StatusVoid},
		{"orders service cancels any", app.Caller{Subject: "orders-service@clients", Service: true}, "auth0|alice", nil, domain.StatusVoid},
		{"someone else's invoice stays hidden and open", app.Caller{Subject: "auth0|bob"}, "auth0|alice", domain.ErrNotFound, domain.StatusOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := newMemStore()
			created := false
			st.afterMiss = func(s *memStore) {
				inv, err := domain.NewInvoice(order, tt.owner, 2400, "EUR", time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				created = s.Create(context.Background(), *inv) == nil
			}
			svc := newService(t, st)
			inv, err := svc.VoidOrder(context.Background(), tt.caller, order)
			if !created {
				t.Fatal("the race was not staged: the invoice was never created between the calls")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (inv.Status != domain.StatusVoid || inv.UserID != tt.owner || inv.AmountCents != 2400) {
				t.Fatalf("got %+v, want the created invoice, void", inv)
			}
			if got := st.status(order); got != tt.wantStatus {
				t.Fatalf("stored status %s, want %s", got, tt.wantStatus)
			}
		})
	}
}

// With no invoice at all, VoidOrder records a void one for the caller, so a
// late order.created cannot open it.
func TestVoidOrderWithoutInvoice(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	svc := newService(t, st)
	inv, err := svc.VoidOrder(context.Background(), app.Caller{Subject: "auth0|alice"}, "ord_2")
	if err != nil || inv.Status != domain.StatusVoid || inv.UserID != "auth0|alice" {
		t.Fatalf("got %+v, %v", inv, err)
	}
	if err := svc.OpenInvoice(context.Background(), app.OrderCreated{OrderID: "ord_2", UserID: "auth0|alice", AmountCents: 100, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if got := st.status("ord_2"); got != domain.StatusVoid {
		t.Fatalf("late created event reopened the invoice: %s", got)
	}
}

// A void recorded ahead of the order by a user who does not own it does not
// survive the owner's order.created: the owner's invoice opens.
func TestVoidOrderByAnotherUserBeforeCreated(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	svc := newService(t, st)
	if _, err := svc.VoidOrder(context.Background(), app.Caller{Subject: "auth0|mallory"}, "ord_3"); err != nil {
		t.Fatal(err)
	}
	if err := svc.OpenInvoice(context.Background(), app.OrderCreated{OrderID: "ord_3", UserID: "auth0|alice", AmountCents: 100, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	got, err := svc.Get(context.Background(), app.Caller{Subject: "auth0|alice"}, domain.InvoiceID("ord_3"))
	if err != nil || got.Status != domain.StatusOpen || got.UserID != "auth0|alice" || got.AmountCents != 100 {
		t.Fatalf("owner's invoice: %+v, %v; want open, alice's, 100", got, err)
	}
}

// order.cancelled voids only its user's invoice: an event naming another
// user's order leaves that invoice open.
func TestOrderCancelledChecksOwner(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	svc := newService(t, st)
	ctx := context.Background()
	if err := svc.OpenInvoice(ctx, app.OrderCreated{OrderID: "ord_4", UserID: "auth0|alice", AmountCents: 100, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.OrderCancelled(ctx, "ord_4", "auth0|mallory", ""); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("another user's order: err = %v, want not found", err)
	}
	if err := svc.OrderCancelled(ctx, "ord_4", "", ""); err == nil {
		t.Error("no user: accepted")
	}
	if got := st.status("ord_4"); got != domain.StatusOpen {
		t.Fatalf("invoice is %s, want open", got)
	}
	if err := svc.OrderCancelled(ctx, "ord_4", "auth0|alice", ""); err != nil {
		t.Fatal(err)
	}
	if got := st.status("ord_4"); got != domain.StatusVoid {
		t.Fatalf("owner's cancel: invoice is %s, want void", got)
	}
}

// newService returns the use cases over st, with no events published.
func newService(t *testing.T, st app.Store) *app.Service {
	t.Helper()
	svc, err := app.New(app.Deps{Store: st, Outbox: nopOutbox{}, OnFlushError: func(err error) { t.Errorf("flush: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// A service without somewhere to report a failed flush would lose it
// silently: New refuses it, as it refuses a missing store or outbox.
func TestNewRequiresDeps(t *testing.T) {
	t.Parallel()
	for _, d := range []app.Deps{
		{Outbox: nopOutbox{}, OnFlushError: func(error) {}},
		{Store: newMemStore(), OnFlushError: func(error) {}},
		{Store: newMemStore(), Outbox: nopOutbox{}},
	} {
		if _, err := app.New(d); err == nil {
			t.Errorf("New(%+v) succeeded", d)
		}
	}
}
