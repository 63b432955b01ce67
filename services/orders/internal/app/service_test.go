package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/orders/internal/adapters"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// fakePublisher seals an event as the identity of ctx: the service's under
// fakeIdentity, else the customer's own (the tests' callers act on their
// own orders). Its sealed events live life (default an hour).
type fakePublisher struct {
	mu     sync.Mutex
	fail   bool
	life   time.Duration
	now    func() time.Time
	events []published
}

// published is an event as it went out, with the actor it was sealed by.
type published struct {
	app.Event
	Actor string
}

func (p *fakePublisher) Seal(ctx context.Context, e app.Event) (app.SealedEvent, error) {
	actor := e.UserID
	if ctx.Value(svcKey{}) != nil {
		actor = fakeIdentity{}.Subject()
	}
	b, err := json.Marshal(published{Event: e, Actor: actor})
	p.mu.Lock()
	defer p.mu.Unlock()
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	return app.SealedEvent{Message: b, PublishBy: p.now().Add(life)}, err
}

func (p *fakePublisher) Publish(_ context.Context, e app.SealedEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return domain.ErrUnavailable
	}
	var ev published
	if err := json.Unmarshal(e.Message, &ev); err != nil {
		return err
	}
	p.events = append(p.events, ev)
	return nil
}

func (p *fakePublisher) setFail(f bool) { p.mu.Lock(); p.fail = f; p.mu.Unlock() }

func (p *fakePublisher) byType(t app.EventType) []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []published
	for _, e := range p.events {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

type fakeProfiles struct{ calls atomic.Int32 }

func (p *fakeProfiles) ShippingAddress(context.Context) (*domain.Address, error) {
	p.calls.Add(1)
	return &domain.Address{Line1: "1 Main St", City: "Berlin", PostalCode: "10115", Country: "DE"}, nil
}

type fakeBilling struct {
	mu     sync.Mutex
	paid   map[string]bool
	fail   map[string]error // VoidOrder's answer for these orders
	voided []string
	ctxs   []context.Context

	delay       time.Duration // how long a void takes, outside the lock
	inflight    int
	maxInflight int
	afterVoid   func(id string) // runs after a successful void, under the lock
}

func (b *fakeBilling) VoidOrder(ctx context.Context, id string) error {
	b.mu.Lock()
	b.inflight++
	b.maxInflight = max(b.maxInflight, b.inflight)
	b.mu.Unlock()
	time.Sleep(b.delay)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	if b.paid[id] {
		return domain.ErrConflict
	}
	if err := b.fail[id]; err != nil {
		return err
	}
	b.voided = append(b.voided, id)
	b.ctxs = append(b.ctxs, ctx)
	if b.afterVoid != nil {
		b.afterVoid(id)
	}
	return nil
}

func (b *fakeBilling) voidsOf(id string) (n int, asService bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, v := range b.voided {
		if v == id {
			n++
			asService = b.ctxs[i].Value(svcKey{}) != nil
		}
	}
	return n, asService
}

func (b *fakeBilling) setFail(id string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail == nil {
		b.fail = map[string]error{}
	}
	if err == nil {
		delete(b.fail, id)
	} else {
		b.fail[id] = err
	}
}

type svcKey struct{}

type fakeIdentity struct{}

func (fakeIdentity) Context(ctx context.Context) (context.Context, error) {
	return context.WithValue(ctx, svcKey{}, true), nil
}
func (fakeIdentity) Subject() string { return "orders-service@clients" }

type fixture struct {
	svc     *app.Service
	orders  *adapters.OrderStore
	pub     *fakePublisher
	billing *fakeBilling
	clock   *atomic.Int64 // offset added to time.Now, ns
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	js := natstest.JetStream(t)
	okv, ikv, err := adapters.EnsureBuckets(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	ordersKV, idemKV := platform.NewLazyBucket(adapters.OrdersBucket), platform.NewLazyBucket(adapters.IdempotencyBucket)
	ordersKV.Set(okv)
	idemKV.Set(ikv)
	f := &fixture{orders: adapters.NewOrderStore(ordersKV), pub: &fakePublisher{}, billing: &fakeBilling{paid: map[string]bool{}}, clock: &atomic.Int64{}}
	now := func() time.Time { return time.Now().Add(time.Duration(f.clock.Load())) }
	f.pub.now = now
	f.svc, err = app.New(app.Deps{
		Orders: f.orders, Outbox: f.orders, Idempotency: adapters.NewIdempotencyStore(idemKV),
		Publisher: f.pub, Profiles: &fakeProfiles{}, Billing: f.billing, Identity: fakeIdentity{},
		Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	alice = app.Caller{Subject: "auth0|alice"}
	bob   = app.Caller{Subject: "auth0|bob"}
	dave  = app.Caller{Subject: "auth0|dave", ReadAll: true}
	mugs  = []domain.LineRequest{{SKU: "mug", Quantity: 2}}
)

func TestPlaceOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	o, replayed, err := f.svc.PlaceOrder(ctx, alice, "", mugs)
	if err != nil || replayed {
		t.Fatalf("place: %v replayed=%v", err, replayed)
	}
	if o.TotalCents != 2400 || o.ShippingAddress == nil || o.Status != domain.StatusPending {
		t.Fatalf("bad order %+v", o)
	}
	ev := f.pub.byType(app.EventOrderCreated)
	if len(ev) != 1 || ev[0].Actor != alice.Subject || ev[0].Order.ID != o.ID {
		t.Fatalf("created events %+v", ev)
	}
	mustDrained(t, f, "the place")
	if _, _, err := f.svc.PlaceOrder(ctx, alice, "", []domain.LineRequest{{SKU: "spoon", Quantity: 1}}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("want ErrValidation, got %v", err)
	}
}

// place has who order two mugs, or fails the test.
func (f *fixture) place(t *testing.T, who app.Caller) domain.Order {
	t.Helper()
	o, _, err := f.svc.PlaceOrder(context.Background(), who, "", mugs)
	if err != nil {
		t.Fatalf("place: %v", err)
	}
	return o
}

func mustList(t *testing.T, f *fixture) []app.PendingEvent {
	t.Helper()
	l, err := f.orders.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// mustDrained fails the test unless the outbox is empty after what.
func mustDrained(t *testing.T, f *fixture, after string) {
	t.Helper()
	if l := mustList(t, f); len(l) != 0 {
		t.Fatalf("outbox after %s: %+v", after, l)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	first, _, err := f.svc.PlaceOrder(ctx, alice, "k1", mugs)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("same body", func(t *testing.T) {
		again, replayed, err := f.svc.PlaceOrder(ctx, alice, "k1", []domain.LineRequest{{SKU: "mug", Quantity: 2}})
		if err != nil || !replayed || again.ID != first.ID {
			t.Fatalf("replay: %v replayed=%v id=%s want %s", err, replayed, again.ID, first.ID)
		}
	})
	t.Run("different body", func(t *testing.T) {
		if _, _, err := f.svc.PlaceOrder(ctx, alice, "k1", []domain.LineRequest{{SKU: "mug", Quantity: 3}}); !errors.Is(err, domain.ErrIdempotencyMismatch) {
			t.Fatalf("want mismatch, got %v", err)
		}
	})
	t.Run("other user same key", func(t *testing.T) {
		o, replayed, err := f.svc.PlaceOrder(ctx, bob, "k1", mugs)
		if err != nil || replayed || o.ID == first.ID {
			t.Fatalf("bob: %v replayed=%v", err, replayed)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		const n = 12
		ids := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				o, _, err := f.svc.PlaceOrder(ctx, alice, "k-concurrent", mugs)
				if err != nil {
					t.Error(err)
					return
				}
				ids <- o.ID
			})
		}
		wg.Wait()
		close(ids)
		seen := map[string]bool{}
		for id := range ids {
			seen[id] = true
		}
		if len(seen) != 1 {
			t.Fatalf("%d distinct orders for one key", len(seen))
		}
	})
	list, err := f.svc.ListOrders(ctx, alice, "")
	if err != nil || len(list) != 2 {
		t.Fatalf("alice has %d orders (%v), want 2", len(list), err)
	}
}

func TestOutboxRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.pub.setFail(true)
	o, _, err := f.svc.PlaceOrder(ctx, alice, "", mugs)
	if err != nil {
		t.Fatalf("an order stored while NATS publishing fails must still be accepted: %v", err)
	}
	if len(mustList(t, f)) != 1 {
		t.Fatal("no outbox entry left behind")
	}
	// An entry whose order never got stored (crash before Create).
	orphan := app.PendingEvent{EventID: app.NewUUID(), Type: app.EventOrderCreated, OrderID: app.NewUUID(), UserID: alice.Subject, OccurredAt: time.Now().UTC()}
	if err := f.orders.Add(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	f.pub.setFail(false)
	if n, err := f.svc.RelayOutbox(ctx); err != nil || n != 0 {
		t.Fatalf("within the grace period nothing is relayed: n=%d err=%v", n, err)
	}
	f.clock.Store(int64(time.Minute))
	n, err := f.svc.RelayOutbox(ctx)
	if err != nil || n != 1 {
		t.Fatalf("relay: n=%d err=%v", n, err)
	}
	ev := f.pub.byType(app.EventOrderCreated)
	// Relayed as sealed at alice's request: under her identity, not the
	// service's, which may not announce orders.
	if len(ev) != 1 || ev[0].Order.ID != o.ID || ev[0].Actor != alice.Subject || ev[0].UserID != alice.Subject || ev[0].Order.TotalCents != 2400 {
		t.Fatalf("relayed %+v", ev)
	}
	mustDrained(t, f, "relay")
}

// TestOutboxRelayWhenTheSealRanOut: an outage outlived the tokens sealed
// with two events. Nothing may announce alice's order for her any more, and
// the service may not announce orders at all, so the relay cancels it as
// the service (billing voids first) and never publishes its order.created;
// a cancel's event, which the service may publish as itself, is sealed
// again under its identity and published.
func TestOutboxRelayWhenTheSealRanOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.pub.life = 10 * time.Minute
	place := func(c app.Caller) domain.Order {
		t.Helper()
		o, _, err := f.svc.PlaceOrder(ctx, c, "", mugs)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	f.pub.setFail(true)
	placed, other := place(alice), place(bob)
	f.pub.setFail(false)
	f.clock.Store(int64(time.Minute))
	if n, err := f.svc.RelayOutbox(ctx); err != nil || n != 2 {
		t.Fatalf("relay within the seal's life: n=%d err=%v", n, err)
	}
	f.pub.setFail(true)
	cancelled, err := f.svc.CancelOrder(ctx, bob, other.ID)
	if err != nil || cancelled.Status != domain.StatusCancelled {
		t.Fatalf("cancel: %+v %v", cancelled, err)
	}
	lost := place(alice)
	f.pub.setFail(false)
	f.clock.Store(int64(time.Hour))
	if n, err := f.svc.RelayOutbox(ctx); err != nil || n != 2 {
		t.Fatalf("relay after the seals ran out: n=%d err=%v", n, err)
	}
	for _, e := range f.pub.byType(app.EventOrderCreated) {
		if e.Order.ID == lost.ID {
			t.Fatalf("order.created of %s published after its seal ran out: %+v", lost.ID, e)
		}
	}
	o, _, err := f.orders.Get(ctx, lost.ID)
	if err != nil || o.Status != domain.StatusCancelled {
		t.Fatalf("the unannounced order is %s (%v), want cancelled", o.Status, err)
	}
	if n, asService := f.billing.voidsOf(lost.ID); n != 1 || !asService {
		t.Fatalf("billing voided %s %d times (as the service: %v), want once as the service", lost.ID, n, asService)
	}
	var reasons []string
	for _, e := range f.pub.byType(app.EventOrderCancelled) {
		if e.Actor != "orders-service@clients" || e.UserID != o.UserID && e.UserID != bob.Subject {
			t.Errorf("cancelled event %+v: want the service's, about its customer", e)
		}
		reasons = append(reasons, e.Order.ID+" "+e.Reason)
	}
	if len(reasons) != 2 || !slices.Contains(reasons, lost.ID+" not_announced") || !slices.Contains(reasons, other.ID+" cancelled_by_user") {
		t.Fatalf("cancelled events %v, want %s not_announced and %s cancelled_by_user", reasons, lost.ID, other.ID)
	}
	if placed.Status != domain.StatusPending {
		t.Fatalf("alice's first order %s", placed.Status)
	}
	mustDrained(t, f, "relay")
}

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	o := f.place(t, alice)
	paidOrder := f.place(t, alice)
	f.billing.paid[paidOrder.ID] = true

	tests := []struct {
		name   string
		caller app.Caller
		id     string
		want   error
	}{
		{"someone else's", bob, o.ID, domain.ErrNotFound},
		{"support cannot cancel others", dave, o.ID, domain.ErrNotFound},
		{"unknown", alice, app.NewUUID(), domain.ErrNotFound},
		{"billing says paid", alice, paidOrder.ID, domain.ErrConflict},
		{"own pending", alice, o.ID, nil},
		{"already cancelled", alice, o.ID, domain.ErrConflict},
	}
	for _, tc := range tests {
		got, err := f.svc.CancelOrder(ctx, tc.caller, tc.id)
		if !errors.Is(err, tc.want) { // errors.Is(err, nil) is err == nil
			t.Fatalf("%s: want %v, got %v", tc.name, tc.want, err)
		}
		if tc.want == nil && got.Status != domain.StatusCancelled {
			t.Fatalf("%s: status %s", tc.name, got.Status)
		}
	}
	if got, _ := f.svc.GetOrder(ctx, alice, paidOrder.ID); got.Status != domain.StatusPending {
		t.Fatalf("order billing refused to void is %s", got.Status)
	}
	ev := f.pub.byType(app.EventOrderCancelled)
	if len(ev) != 1 || ev[0].Order.ID != o.ID || ev[0].Actor != alice.Subject {
		t.Fatalf("cancelled events %+v", ev)
	}
}

func TestGetAndListOwnership(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	o := f.place(t, alice)
	if _, err := f.svc.GetOrder(ctx, bob, o.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("bob reads alice's order: %v", err)
	}
	if _, err := f.svc.GetOrder(ctx, dave, o.ID); err != nil {
		t.Fatalf("support reads any order: %v", err)
	}
	if _, err := f.svc.ListOrders(ctx, bob, alice.Subject); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("bob lists alice's orders: %v", err)
	}
	if l, err := f.svc.ListOrders(ctx, dave, alice.Subject); err != nil || len(l) != 1 {
		t.Fatalf("support lists alice's: %v %v", l, err)
	}
	if l, err := f.svc.ListOrders(ctx, bob, ""); err != nil || len(l) != 0 {
		t.Fatalf("bob's own: %v %v", l, err)
	}
}

func TestApplyInvoiceStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	o := f.place(t, alice)
	other := f.place(t, alice)
	steps := []struct {
		name  string
		id    string
		user  string
		next  domain.Status
		want  error
		state domain.Status
	}{
		{"refund before pay", o.ID, alice.Subject, domain.StatusRefunded, domain.ErrConflict, domain.StatusPending},
		{"wrong owner", o.ID, bob.Subject, domain.StatusPaid, domain.ErrForbidden, domain.StatusPending},
		{"paid", o.ID, alice.Subject, domain.StatusPaid, nil, domain.StatusPaid},
		{"paid redelivered", o.ID, alice.Subject, domain.StatusPaid, nil, domain.StatusPaid},
		{"refunded", o.ID, alice.Subject, domain.StatusRefunded, nil, domain.StatusRefunded},
		{"refunded redelivered", o.ID, alice.Subject, domain.StatusRefunded, nil, domain.StatusRefunded},
		{"cancel is not an invoice status", other.ID, alice.Subject, domain.StatusCancelled, domain.ErrValidation, domain.StatusPending},
		{"unknown order", app.NewUUID(), alice.Subject, domain.StatusPaid, domain.ErrNotFound, ""},
	}
	for _, s := range steps {
		err := f.svc.ApplyInvoiceStatus(ctx, s.id, s.user, s.next)
		if !errors.Is(err, s.want) {
			t.Fatalf("%s: want %v, got %v", s.name, s.want, err)
		}
		if s.state != "" {
			got, _ := f.svc.GetOrder(ctx, dave, s.id)
			if got.Status != s.state {
				t.Fatalf("%s: status %s, want %s", s.name, got.Status, s.state)
			}
		}
	}
}

func TestConcurrentInvoiceAndCancelCAS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	o := f.place(t, alice)
	// Billing's arbiter is faked away here to exercise the KV compare-and-set
	// alone: of a paid event and a cancel racing, exactly one may win.
	var wg sync.WaitGroup
	var payErr, cancelErr error
	wg.Go(func() { payErr = f.svc.ApplyInvoiceStatus(ctx, o.ID, alice.Subject, domain.StatusPaid) })
	wg.Go(func() { _, cancelErr = f.svc.CancelOrder(ctx, alice, o.ID) })
	wg.Wait()
	got, _ := f.svc.GetOrder(ctx, alice, o.ID)
	switch got.Status {
	case domain.StatusPaid:
		if payErr != nil || !errors.Is(cancelErr, domain.ErrConflict) {
			t.Fatalf("paid won but pay=%v cancel=%v", payErr, cancelErr)
		}
	case domain.StatusCancelled:
		if cancelErr != nil || !errors.Is(payErr, domain.ErrConflict) {
			t.Fatalf("cancel won but pay=%v cancel=%v", payErr, cancelErr)
		}
	default:
		t.Fatalf("status %s", got.Status)
	}
}

func TestCancelPendingForUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	p1 := f.place(t, alice)
	p2 := f.place(t, alice)
	paid := f.place(t, alice)
	racing := f.place(t, alice)
	bobs := f.place(t, bob)
	if err := f.svc.ApplyInvoiceStatus(ctx, paid.ID, alice.Subject, domain.StatusPaid); err != nil {
		t.Fatal(err)
	}
	f.billing.paid[racing.ID] = true // paid at billing, event not here yet

	n, err := f.svc.CancelPendingForUser(ctx, alice.Subject)
	if err != nil || n != 2 {
		t.Fatalf("cancelled %d (%v), want 2", n, err)
	}
	want := map[string]domain.Status{p1.ID: domain.StatusCancelled, p2.ID: domain.StatusCancelled, paid.ID: domain.StatusPaid, racing.ID: domain.StatusPending, bobs.ID: domain.StatusPending}
	for id, st := range want {
		if got, _ := f.svc.GetOrder(ctx, dave, id); got.Status != st {
			t.Fatalf("order %s: %s, want %s", id, got.Status, st)
		}
	}
	for _, c := range f.billing.ctxs {
		if c.Value(svcKey{}) == nil {
			t.Fatal("billing was called without the service identity")
		}
	}
	for _, e := range f.pub.byType(app.EventOrderCancelled) {
		if e.Actor != "orders-service@clients" || e.Reason != "user_blocked" || e.UserID != alice.Subject {
			t.Fatalf("bad cancelled event %+v", e)
		}
	}
	// Redelivery of the same user.blocked event: nothing more to do.
	if n, err := f.svc.CancelPendingForUser(ctx, alice.Subject); err != nil || n != 0 {
		t.Fatalf("second run: %d %v", n, err)
	}
}

// A blocked user's orders are cancelled several at a time (never more than
// eight billing calls at once), every one is tried, and each failure is
// reported.
func TestCancelPendingForUserConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	const total = 24
	ids := make([]string, 0, total)
	for range total {
		o, _, err := f.svc.PlaceOrder(ctx, alice, "", mugs)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	errA := errors.New("billing timeout A")
	errB := errors.New("billing timeout B")
	f.billing.fail = map[string]error{ids[3]: errA, ids[17]: errB}
	f.billing.delay = 20 * time.Millisecond

	n, err := f.svc.CancelPendingForUser(ctx, alice.Subject)
	if n != total-2 {
		t.Fatalf("cancelled %d, want %d", n, total-2)
	}
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Fatalf("want both billing failures joined, got %v", err)
	}
	f.billing.mu.Lock()
	peak := f.billing.maxInflight
	f.billing.mu.Unlock()
	if peak < 2 || peak > 8 {
		t.Fatalf("at most %d voids at once, want 2..8", peak)
	}
	for i, id := range ids {
		want := domain.StatusCancelled
		if i == 3 || i == 17 {
			want = domain.StatusPending // not voided, so not cancelled
		}
		if got, _ := f.svc.GetOrder(ctx, dave, id); got.Status != want {
			t.Fatalf("order %s: %s, want %s", id, got.Status, want)
		}
	}
}

// TestCancelOutlivesTheRequestOnceVoided: the client hangs up right after
// billing voided the invoice; the cancel still ends with the order cancelled
// (not pending with a void invoice), its event out, and no intent left.
func TestCancelOutlivesTheRequestOnceVoided(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o, _, err := f.svc.PlaceOrder(context.Background(), alice, "", mugs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	f.billing.afterVoid = func(string) { hangUp() }
	got, err := f.svc.CancelOrder(ctx, alice, o.ID)
	if err != nil || got.Status != domain.StatusCancelled {
		t.Fatalf("cancel after the void: %s, %v", got.Status, err)
	}
	if cur, _ := f.svc.GetOrder(context.Background(), alice, o.ID); cur.Status != domain.StatusCancelled {
		t.Fatalf("stored order is %s", cur.Status)
	}
	if ev := f.pub.byType(app.EventOrderCancelled); len(ev) != 1 || ev[0].Order.ID != o.ID {
		t.Fatalf("cancelled events %+v", ev)
	}
	mustDrained(t, f, "the cancel")
}

// TestRelayFinishesALeftBehindCancel: a cancel intent outlives the request
// that wrote it (a crash after billing's void, or a void whose answer never
// came); the relay asks billing again as the service and finishes
// pending → cancelled, or drops the intent when the payment won.
func TestRelayFinishesALeftBehindCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name       string
		setup      func(t *testing.T, f *fixture, id string) // leaves an intent behind
		paid       bool                                      // billing answers 409 by relay time
		wantStatus domain.Status
		wantN      int
	}{
		{"crash between the void and the order update", func(t *testing.T, f *fixture, id string) {
			intent := app.PendingEvent{EventID: app.NewUUID(), Type: app.IntentCancel, OrderID: id, UserID: alice.Subject,
				Reason: "cancelled_by_user", OccurredAt: time.Now().UTC()}
			if err := f.orders.Add(ctx, intent); err != nil {
				t.Fatal(err)
			}
			if err := f.billing.VoidOrder(ctx, id); err != nil { // billing did void; then the process died
				t.Fatal(err)
			}
		}, false, domain.StatusCancelled, 1},
		{"void outcome unknown (billing timed out)", func(t *testing.T, f *fixture, id string) {
			f.billing.setFail(id, fmt.Errorf("billing void: %w: timeout", domain.ErrUnavailable))
			if _, err := f.svc.CancelOrder(ctx, alice, id); !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("cancel: %v", err)
			}
			f.billing.setFail(id, nil)
		}, false, domain.StatusCancelled, 1},
		{"the payment won meanwhile", func(t *testing.T, f *fixture, id string) {
			f.billing.setFail(id, fmt.Errorf("billing void: %w: timeout", domain.ErrUnavailable))
			if _, err := f.svc.CancelOrder(ctx, alice, id); err == nil {
				t.Fatal("cancel succeeded")
			}
			f.billing.setFail(id, nil)
		}, true, domain.StatusPending, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			o, _, err := f.svc.PlaceOrder(ctx, alice, "", mugs)
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, f, o.ID)
			if l := mustList(t, f); len(l) != 1 || l[0].Type != app.IntentCancel {
				t.Fatalf("left behind: %+v, want one cancel intent", l)
			}
			if tc.paid {
				f.billing.mu.Lock()
				f.billing.paid[o.ID] = true
				f.billing.mu.Unlock()
			}
			before, _ := f.billing.voidsOf(o.ID)
			if n, err := f.svc.RelayOutbox(ctx); err != nil || n != 0 {
				t.Fatalf("within the grace period the intent is the request's: n=%d err=%v", n, err)
			}
			f.clock.Store(int64(time.Minute))
			n, err := f.svc.RelayOutbox(ctx)
			if err != nil || n != tc.wantN {
				t.Fatalf("relay: n=%d err=%v, want n=%d", n, err, tc.wantN)
			}
			if cur, _ := f.svc.GetOrder(ctx, alice, o.ID); cur.Status != tc.wantStatus {
				t.Fatalf("order %s, want %s", cur.Status, tc.wantStatus)
			}
			mustDrained(t, f, "the relay")
			if tc.wantStatus != domain.StatusCancelled {
				return
			}
			if after, asService := f.billing.voidsOf(o.ID); after != before+1 || !asService {
				t.Fatalf("billing voids %d → %d (as service: %v): the relay must ask again as the service", before, after, asService)
			}
			ev := f.pub.byType(app.EventOrderCancelled)
			if len(ev) != 1 || ev[0].Order.ID != o.ID || ev[0].Actor != "orders-service@clients" || ev[0].UserID != alice.Subject || ev[0].Reason != "cancelled_by_user" {
				t.Fatalf("cancelled events %+v", ev)
			}
		})
	}
}
