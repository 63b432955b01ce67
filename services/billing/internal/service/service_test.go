package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/billing/internal/adapters"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

const audience = "https://api.authmesh.dev"

// stack is billing running against an in-process NATS and devtenant.
type stack struct {
	t      *testing.T
	base   string
	nc     *nats.Conn
	js     jetstream.JetStream
	tenant *tenant.Server
	tokens map[string]string // email or client → token
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)

	idp := httptest.NewUnstartedServer(nil)
	issuer := "http://" + idp.Listener.Addr().String() + "/"
	ten, err := tenant.New(tenant.Config{Issuer: issuer, TenantFile: "../../../../deploy/tenant.yaml", DevDir: "../../../../deploy/dev",
		DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	idp.Config.Handler = ten.Handler()
	idp.Start()
	t.Cleanup(idp.Close)

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// What the users and orders services own, created here in their place.
	if _, err := natsauth.NewRevocationStore(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS_EVENTS", Subjects: []string{"orders.events.>"}}); err != nil {
		t.Fatal(err)
	}

	cfg, err := platform.LoadConfig("billing", func(k string) string {
		return map[string]string{"AUTH0_ISSUER": issuer, "BILLING_NATS_URL": ns.ClientURL(), "AUTH0_TENANT_FILE": "../../../../deploy/tenant.yaml"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, cfg, platform.Options{Listener: ln, Logger: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	s := &stack{t: t, base: "http://" + ln.Addr().String(), nc: nc, js: js, tenant: ten, tokens: map[string]string{}}
	for _, u := range []string{"alice", "bob", "dave", "carol"} {
		tok, err := ten.IssueUserToken(u+"@authmesh.dev", audience, "openid")
		if err != nil {
			t.Fatal(err)
		}
		s.tokens[u] = tok
	}
	for _, c := range []string{"orders-service", "billing-service"} {
		tok, err := ten.IssueClientToken(c, audience)
		if err != nil {
			t.Fatal(err)
		}
		s.tokens[c] = tok
	}
	s.waitReady()
	return s
}

func (s *stack) waitReady() {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			if time.Now().Add(100 * time.Millisecond).After(deadline) {
				s.t.Fatalf("not ready: %s", raw)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal("not ready")
}

// sub reads the subject of a token the tenant issued.
func sub(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Sub string }
	_ = json.Unmarshal(raw, &c)
	return c.Sub
}

func (s *stack) do(method, path, who string) (int, map[string]any, []map[string]any, http.Header) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, nil)
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+s.tokens[who])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var obj map[string]any
	var list []map[string]any
	if json.Unmarshal(raw, &obj) != nil {
		_ = json.Unmarshal(raw, &list)
	}
	return resp.StatusCode, obj, list, resp.Header
}

// orderEvent publishes an order event as the orders service would, with a
// distinct Nats-Msg-Id each time so JetStream's de-duplication cannot hide
// a redelivery from billing.
func (s *stack) orderEvent(who, typ, orderID, userID string, data any) {
	s.t.Helper()
	raw, _ := json.Marshal(data)
	env, _ := json.Marshal(natsauth.Envelope{ID: fmt.Sprint(time.Now().UnixNano()), Type: typ, Actor: sub(s.t, s.tokens[who]),
		UserID: userID, OccurredAt: time.Now().UTC(), Data: raw})
	ctx := authz.WithClaims(context.Background(), nil, s.tokens[who])
	msg, err := natsauth.NewMsg(ctx, "orders.events."+strings.TrimPrefix(typ, "order."), env)
	if err != nil {
		s.t.Fatal(err)
	}
	msg.Header.Set(natsauth.HeaderMsgID, fmt.Sprintf("%s:%s:%d", typ, orderID, time.Now().UnixNano()))
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) created(who, orderID string, cents int) {
	s.orderEvent(who, "order.created", orderID, sub(s.t, s.tokens[who]),
		map[string]any{"order_id": orderID, "total_cents": cents, "currency": "EUR", "items": []any{}})
}

// invoiceOf waits until the order's invoice exists and returns it.
func (s *stack) invoiceOf(who, orderID string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		code, _, list, _ := s.do("GET", "/v1/invoices?order_id="+orderID, who)
		if code == 200 && len(list) == 1 {
			return list[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("no invoice for order %s", orderID)
	return nil
}

func (s *stack) void(who, orderID string) error {
	ctx, cancel := context.WithTimeout(authz.WithClaims(context.Background(), nil, s.tokens[who]), 3*time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]string{"order_id": orderID})
	_, err := natsauth.Request(ctx, s.nc, adapters.VoidSubject, b)
	return err
}

func serviceCode(err error) int {
	var se *natsauth.ServiceError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// nextEvent reads billing's events from a fresh ordered consumer.
func (s *stack) events(t *testing.T) func() (jetstream.Msg, map[string]any) {
	cons, err := s.js.OrderedConsumer(context.Background(), adapters.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return func() (jetstream.Msg, map[string]any) {
		t.Helper()
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("no event: %v", err)
		}
		var env map[string]any
		_ = json.Unmarshal(m.Data(), &env)
		return m, env
	}
}

func TestBilling(t *testing.T) {
	s := newStack(t)
	alice := sub(t, s.tokens["alice"])

	t.Run("lifecycle: open, pay, refund, with events", func(t *testing.T) {
		next := s.events(t)
		s.created("alice", "ord-life", 900)
		inv := s.invoiceOf("alice", "ord-life")
		if inv["status"] != "open" || inv["amount_cents"] != float64(900) || inv["user_id"] != alice || inv["paid_at"] != nil || inv["currency"] != "EUR" {
			t.Fatalf("invoice %v", inv)
		}
		id := inv["id"].(string)
		steps := []struct {
			name, method, path, who string
			status                  int
			code                    string
		}{
			{"get own", "GET", "/v1/invoices/" + id, "alice", 200, ""},
			{"get someone else's", "GET", "/v1/invoices/" + id, "bob", 404, "not_found"},
			{"support reads any", "GET", "/v1/invoices/" + id, "dave", 200, ""},
			{"get no token", "GET", "/v1/invoices/" + id, "", 401, "missing_token"},
			{"get unknown id", "GET", "/v1/invoices/inv_nope", "alice", 404, "not_found"},
			{"get malformed id", "GET", "/v1/invoices/xyz", "alice", 404, "not_found"},
			{"pay someone else's", "POST", "/v1/invoices/" + id + "/pay", "bob", 404, "not_found"},
			{"pay as a service", "POST", "/v1/invoices/" + id + "/pay", "billing-service", 403, "insufficient_scope"},
			{"refund while open", "POST", "/v1/invoices/" + id + "/refund", "carol", 409, "conflict"},
			{"pay", "POST", "/v1/invoices/" + id + "/pay", "alice", 200, ""},
			{"pay twice", "POST", "/v1/invoices/" + id + "/pay", "alice", 409, "conflict"},
			{"refund without permission", "POST", "/v1/invoices/" + id + "/refund", "alice", 403, "insufficient_scope"},
			{"refund", "POST", "/v1/invoices/" + id + "/refund", "carol", 200, ""},
			{"refund twice", "POST", "/v1/invoices/" + id + "/refund", "carol", 409, "conflict"},
			{"pay refunded", "POST", "/v1/invoices/" + id + "/pay", "alice", 409, "conflict"},
		}
		for _, st := range steps {
			code, body, _, hdr := s.do(st.method, st.path, st.who)
			if code != st.status {
				t.Fatalf("%s: status %d, want %d (%v)", st.name, code, st.status, body)
			}
			if st.code != "" && (body["error"] != st.code || body["message"] == "") {
				t.Fatalf("%s: body %v, want error %q", st.name, body, st.code)
			}
			if st.status == 403 && !strings.Contains(hdr.Get("WWW-Authenticate"), "insufficient_scope") {
				t.Fatalf("%s: WWW-Authenticate %q", st.name, hdr.Get("WWW-Authenticate"))
			}
		}
		_, final, _, _ := s.do("GET", "/v1/invoices/"+id, "alice")
		if final["status"] != "refunded" || final["paid_at"] == nil {
			t.Fatalf("final %v", final)
		}
		for _, want := range []struct{ typ, actor, who string }{{"invoice.paid", alice, "alice"}, {"invoice.refunded", sub(t, s.tokens["carol"]), "carol"}} {
			m, env := next()
			if env["type"] != want.typ || env["actor"] != want.actor || env["user_id"] != alice {
				t.Fatalf("event %v, want %s by %s", env, want.typ, want.actor)
			}
			// The fast path publishes under the caller's own token.
			if m.Headers().Get(natsauth.HeaderMsgID) != want.typ+":"+id || m.Headers().Get(natsauth.HeaderAuthorization) != "Bearer "+s.tokens[want.who] {
				t.Fatalf("headers %v", m.Headers())
			}
			data := env["data"].(map[string]any)
			if data["invoice_id"] != id || data["order_id"] != "ord-life" || data["amount_cents"] != float64(900) {
				t.Fatalf("data %v", data)
			}
		}
		// Every kept revision of the record (the bucket keeps history, and
		// the outbox was in it between the write and the flush) is free of
		// bearer tokens.
		kv, err := s.js.KeyValue(context.Background(), adapters.InvoiceBucket)
		if err != nil {
			t.Fatal(err)
		}
		hist, err := kv.History(context.Background(), "ord-life")
		if err != nil {
			t.Fatal(err)
		}
		sawOutbox := false
		for _, e := range hist {
			assertNoToken(t, s, e.Value())
			sawOutbox = sawOutbox || strings.Contains(string(e.Value()), `"outbox"`)
		}
		if !sawOutbox {
			t.Fatalf("no revision with an outbox among %d: the check above proved nothing", len(hist))
		}
	})

	t.Run("list: own, by order, other users need read:all-invoices", func(t *testing.T) {
		s.created("bob", "ord-bob", 450)
		s.invoiceOf("bob", "ord-bob")
		bob := sub(t, s.tokens["bob"])
		cases := []struct {
			name, path, who string
			status, n       int
		}{
			{"own", "/v1/invoices", "bob", 200, 1},
			{"someone else's order", "/v1/invoices?order_id=ord-bob", "alice", 200, 0},
			{"other user without permission", "/v1/invoices?user_id=" + bob, "alice", 403, -1},
			{"other user as support", "/v1/invoices?user_id=" + bob, "dave", 200, 1},
			{"bad order id", "/v1/invoices?order_id=a.b", "bob", 422, -1},
			{"no token", "/v1/invoices", "", 401, -1},
		}
		for _, c := range cases {
			code, body, list, _ := s.do("GET", c.path, c.who)
			if code != c.status || (c.n >= 0 && len(list) != c.n) {
				t.Errorf("%s: %d %v %v", c.name, code, body, list)
			}
			if code == 422 && body["fields"] == nil {
				t.Errorf("%s: no fields: %v", c.name, body)
			}
		}
	})

	t.Run("redelivered order.created ten times: one invoice", func(t *testing.T) {
		for range 10 {
			s.created("alice", "ord-redeliver", 1200)
		}
		s.invoiceOf("alice", "ord-redeliver")
		time.Sleep(300 * time.Millisecond) // let the rest be consumed
		_, _, list, _ := s.do("GET", "/v1/invoices", "alice")
		n := 0
		for _, inv := range list {
			if inv["order_id"] == "ord-redeliver" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d invoices for one order", n)
		}
	})

	t.Run("order.cancelled voids the open invoice", func(t *testing.T) {
		s.created("alice", "ord-cancel", 390)
		id := s.invoiceOf("alice", "ord-cancel")["id"].(string)
		s.orderEvent("alice", "order.cancelled", "ord-cancel", alice, map[string]any{"order_id": "ord-cancel", "reason": "customer"})
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, inv, _, _ := s.do("GET", "/v1/invoices/"+id, "alice")
			if inv["status"] == "void" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still %v", inv)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("void endpoint: policy, ownership, void before created", func(t *testing.T) {
		s.created("alice", "ord-void", 100)
		s.invoiceOf("alice", "ord-void")
		if code := serviceCode(s.void("bob", "ord-void")); code != 404 {
			t.Errorf("bob voids alice's: %d", code)
		}
		if code := serviceCode(s.void("billing-service", "ord-void")); code != 403 {
			t.Errorf("billing-service M2M (not an allowed client): %d", code)
		}
		if code := serviceCode(s.void("", "ord-void")); code != 401 {
			t.Errorf("no token: %d", code)
		}
		if err := s.void("alice", "ord-void"); err != nil {
			t.Errorf("owner voids: %v", err)
		}
		if err := s.void("orders-service", "ord-void"); err != nil {
			t.Errorf("void again as orders-service: %v", err)
		}
		// Cancelled before billing heard of the order: a late created event cannot open it.
		if err := s.void("alice", "ord-early"); err != nil {
			t.Fatal(err)
		}
		s.created("alice", "ord-early", 4500)
		deadline := time.Now().Add(5 * time.Second)
		for {
			inv := s.invoiceOf("alice", "ord-early")
			if inv["status"] != "void" {
				t.Fatalf("late created reopened it: %v", inv)
			}
			if inv["amount_cents"] == float64(4500) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("amount never filled in: %v", inv)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if code, _, _, _ := s.do("POST", "/v1/invoices/inv_ord-early/pay", "alice"); code != 409 {
			t.Errorf("paying a void invoice: %d", code)
		}
		// The same, voided by the orders service (a cancel intent or a blocked
		// user): the void has no user until the created event names the owner,
		// and then it is in the owner's list, not just found by its order id.
		if err := s.void("orders-service", "ord-early-svc"); err != nil {
			t.Fatalf("orders-service voids before created: %v", err)
		}
		s.created("alice", "ord-early-svc", 700)
		deadline = time.Now().Add(5 * time.Second)
		for {
			_, _, list, _ := s.do("GET", "/v1/invoices", "alice")
			var found map[string]any
			for _, inv := range list {
				if inv["order_id"] == "ord-early-svc" {
					found = inv
				}
			}
			if found != nil && found["amount_cents"] == float64(700) {
				if found["status"] != "void" {
					t.Fatalf("late created reopened the orders service's void: %v", found)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's list never showed ord-early-svc filled in: %v", found)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("concurrent pay and void: exactly one wins", func(t *testing.T) {
		for i := range 8 {
			order := fmt.Sprintf("ord-race-%d", i)
			s.created("alice", order, 100)
			id := s.invoiceOf("alice", order)["id"].(string)
			var wg sync.WaitGroup
			var payCode int
			var voidErr error
			start := make(chan struct{})
			wg.Go(func() { <-start; payCode, _, _, _ = s.do("POST", "/v1/invoices/"+id+"/pay", "alice") })
			wg.Go(func() { <-start; voidErr = s.void("orders-service", order) })
			close(start)
			wg.Wait()
			_, inv, _, _ := s.do("GET", "/v1/invoices/"+id, "alice")
			switch {
			case payCode == 200 && serviceCode(voidErr) == 409 && inv["status"] == "paid":
			case payCode == 409 && voidErr == nil && inv["status"] == "void":
			default:
				t.Fatalf("pay %d, void %v, status %v", payCode, voidErr, inv["status"])
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(s.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`billing_invoice_transitions_total{status="paid"}`, "billing_orders_consumer_pending", "billing_outbox_pending 0",
			`http_requests_total{code="200",method="POST",route="/v1/invoices/:id/pay"}`, "billing_authz_decisions_total", "authmesh_events_total"} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestOutboxRelayPublishesWhatACrashLeftBehind writes a paid invoice with its
// owed event the way the use case does, but never flushes, as if the process
// died right after the write: the relay must publish it.
func TestOutboxRelayPublishesWhatACrashLeftBehind(t *testing.T) {
	s := newStack(t)
	s.created("alice", "ord-crash", 700)
	s.invoiceOf("alice", "ord-crash")
	next := s.events(t)

	kv, err := adapters.Setup(context.Background(), s.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	store := adapters.NewStore(kv)
	alice := sub(t, s.tokens["alice"])
	ctx := authz.WithClaims(context.Background(), &authz.Claims{Subject: alice}, s.tokens["alice"])
	cur, err := store.Get(ctx, "ord-crash")
	if err != nil {
		t.Fatal(err)
	}
	inv := cur.Invoice
	if err := inv.Pay(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := store.Update(ctx, inv, cur.Revision, app.Event{Type: app.EventInvoicePaid, Invoice: inv}); err != nil {
		t.Fatal(err)
	}
	// A concurrent writer at the old revision loses.
	if err := store.Update(ctx, inv, cur.Revision); !errors.Is(err, app.ErrStale) {
		t.Fatalf("stale update: %v", err)
	}
	// What sits in the bucket names the actor but holds no token.
	e, err := kv.Get(context.Background(), "ord-crash")
	if err != nil {
		t.Fatal(err)
	}
	assertNoToken(t, s, e.Value())
	if !strings.Contains(string(e.Value()), `"actor":"`+alice+`"`) {
		t.Fatalf("record %s lacks the actor", e.Value())
	}
	// The relay has no caller token: it publishes as billing-service.
	m, env := next()
	if env["type"] != "invoice.paid" || m.Headers().Get(natsauth.HeaderMsgID) != "invoice.paid:"+domain.InvoiceID("ord-crash") {
		t.Fatalf("event %v %v", env, m.Headers())
	}
	authzHdr := m.Headers().Get(natsauth.HeaderAuthorization)
	if !strings.HasPrefix(authzHdr, "Bearer ") || sub(t, strings.TrimPrefix(authzHdr, "Bearer ")) != "billing-service@clients" ||
		env["actor"] != "billing-service@clients" || env["user_id"] != alice {
		t.Fatalf("relayed event not under billing-service: actor %v, user %v", env["actor"], env["user_id"])
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err := kv.Get(context.Background(), "ord-crash")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(e.Value()), `"outbox"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("outbox never cleared")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNoToken fails when a stored value holds a JWT: any of the tenant's
// tokens, or anything shaped like one (base64url JSON header "eyJ").
func assertNoToken(t *testing.T, s *stack, raw []byte) {
	t.Helper()
	if strings.Contains(string(raw), "eyJ") {
		t.Fatalf("stored record holds a JWT-shaped value: %d bytes", len(raw))
	}
	for who, tok := range s.tokens {
		if strings.Contains(string(raw), tok) {
			t.Fatalf("stored record holds %s's token", who)
		}
	}
}

// TestOrderEventOnAnotherUsersBehalf: only orders-service's own M2M token may
// publish an order event about another user's order. A customer (or an
// admin: orders never lets a user cancel someone else's order) holds
// cancel:orders too, so a policy that only restricts M2M clients would let
// their token void anyone's invoice.
func TestOrderEventOnAnotherUsersBehalf(t *testing.T) {
	s := newStack(t)
	alice := sub(t, s.tokens["alice"])
	dlq, err := s.js.OrderedConsumer(context.Background(), adapters.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, who string
		applied   bool
		reason    string
	}{
		{"a customer's token", "bob", false, "on_behalf_denied"},
		{"an admin's token", "carol", false, "on_behalf_denied"},
		// ORDERS_EVENTS admits no other client's token at all.
		{"another service's client", "billing-service", false, "not_authorized: client_not_allowed"},
		{"orders-service's client", "orders-service", true, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orderID := fmt.Sprintf("ord-behalf-%d", i)
			s.created("alice", orderID, 450)
			s.invoiceOf("alice", orderID)
			s.orderEvent(c.who, "order.cancelled", orderID, alice, map[string]any{"order_id": orderID, "reason": "test"})
			if c.applied {
				deadline := time.Now().Add(5 * time.Second)
				for s.invoiceOf("alice", orderID)["status"] != "void" {
					if time.Now().After(deadline) {
						t.Fatal("cancel by orders-service never voided the invoice")
					}
					time.Sleep(20 * time.Millisecond)
				}
				return
			}
			m, err := dlq.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatalf("not dead-lettered: %v", err)
			}
			var env map[string]any
			_ = json.Unmarshal(m.Data(), &env)
			if env["type"] != "order.cancelled" || !strings.Contains(string(m.Data()), orderID) {
				t.Fatalf("dead letter %s", m.Data())
			}
			if got := m.Headers().Get(natsauth.HeaderDLQReason); !strings.HasPrefix(got, c.reason) {
				t.Fatalf("dead-letter reason %q, want %s", got, c.reason)
			}
			if st := s.invoiceOf("alice", orderID)["status"]; st != "open" {
				t.Fatalf("invoice %v after a rejected cancel", st)
			}
		})
	}
}
