package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/pkg/platform/platformtest"
	"github.com/authmesh/authmesh/services/billing/internal/adapters"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
	"github.com/authmesh/authmesh/services/billing/internal/ports"
	"github.com/authmesh/authmesh/services/tts/ttstest"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// stack is billing running against an in-process NATS with the mesh's
// accounts, devtenant and the real Transaction Token Service.
type stack struct {
	t    *testing.T
	ms   *ttstest.Stack // people connect to its WebSocket listener
	base string
	// nc and js are the orders service's connection and JetStream: the
	// tests send order events and void requests as orders.
	nc *nats.Conn
	js jetstream.JetStream
	// billingJS is billing's own account, where its streams and bucket are.
	billingJS jetstream.JetStream
	tenant    *tenant.Server
	tokens    map[string]string // email or client → access token
	// orders and billing exchange tokens as those services do (their own
	// M2M token as the actor); txn verifies what billing sends.
	orders  *ttstest.Peer
	billing *natsauth.TxnClient
	txn     *authz.TxnValidator
}

func newStack(t *testing.T) *stack { return newStackWith(t, "") }

// newStackWith is newStack with devtenant issuing tokens in dialect ("" is
// deploy/tenant.yaml's).
func newStackWith(t *testing.T, dialect string) *stack {
	t.Helper()
	ms := ttstest.NewStack(t, ttstest.StackConfig{NATS: ttstest.WebSocket, TokenDialect: dialect})
	tts := ms.StartTTS(t, nil)
	// What the orders service owns, created here in its place, in its own
	// account: ORDERS_EVENTS and the durable billing binds to (the
	// revocation bucket, users', comes with the stack).
	orders := ms.Peer(t, mesh.Orders, jetstream.StreamConfig{Name: ports.OrdersStream, Subjects: []string{"orders.events.>"}})
	billing := ms.Peer(t, mesh.Billing)
	cfg := ms.ServiceConfig(t, "billing", tts, nil)

	s := &stack{t: t, ms: ms, nc: orders.NC, js: orders.JS, billingJS: billing.JS, tenant: ms.Tenant, tokens: map[string]string{},
		orders: orders, billing: billing.Txn, txn: ttstest.TxnValidator(t, tts.JWKSURL)}
	for _, u := range []string{"alice", "bob", "dave", "carol"} {
		s.tokens[u] = ms.UserToken(t, u+"@authmesh.dev", "openid")
	}
	for _, c := range []string{"orders-service", "billing-service"} {
		s.tokens[c] = ms.ClientToken(t, c)
	}
	s.base, _ = platformtest.Serve(t, func(ctx context.Context, opts platform.Options) error {
		return RunWith(ctx, cfg, opts)
	})
	return s
}

type staticToken = ttstest.StaticToken

// asOrders is the context the orders service sends under: who's access
// token (the request it serves), exchanged by orders' own client for a
// transaction token narrowed to each message's hop; "orders-service" is
// orders acting as itself (natsauth.AsService), "" no identity at all.
func (s *stack) asOrders(who string) context.Context {
	if who == "orders-service" {
		return natsauth.AsService(s.orders.Outbound(context.Background(), ""), staticToken(s.tokens[who]))
	}
	return s.orders.Outbound(context.Background(), s.tokens[who])
}

// billingTxn is a transaction token of billing-service's own, minted for a
// hop it sends (billing.events.invoice.refunded): the orders service receives
// such tokens with the invoice events billing's relay republishes. The
// attacks below replay it where it was not meant to go.
func (s *stack) billingTxn() string {
	s.t.Helper()
	tok, err := s.billing.Exchange(context.Background(), s.tokens["billing-service"], mesh.HopScopes("billing.events.invoice.refunded"))
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// do sends method path with who's token ("" for none) and returns the
// answer's status, its body as an object or as a list, and its header.
func (s *stack) do(method, path, who string) (int, map[string]any, []map[string]any, http.Header) {
	s.t.Helper()
	r := platformtest.Do(s.t, method, s.base+path, s.tokens[who], "")
	var obj map[string]any
	var list []map[string]any
	if json.Unmarshal(r.Body, &obj) != nil {
		_ = json.Unmarshal(r.Body, &list)
	}
	return r.Status, obj, list, r.Header
}

// orderEvent publishes an order event as the orders service would on
// behalf of who (see asOrders), with a distinct Nats-Msg-Id each time so
// JetStream's de-duplication cannot hide a redelivery from billing.
func (s *stack) orderEvent(who, typ, orderID, userID string, data any) {
	s.t.Helper()
	raw, _ := json.Marshal(data)
	ev, err := natsauth.SealEvent(s.asOrders(who), orderSubject(typ), fmt.Sprintf("%s:%s:%d", typ, orderID, time.Now().UnixNano()),
		natsauth.Envelope{Type: typ, UserID: userID, Data: raw})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := ev.Publish(context.Background(), s.js); err != nil {
		s.t.Fatal(err)
	}
}

// rawOrderEvent publishes an order event with exactly the headers hdr, as
// whoever holds the orders service's NATS identity could (no other account
// may publish there).
func (s *stack) rawOrderEvent(hdr nats.Header, actor, typ, orderID, userID string, data any) {
	s.t.Helper()
	msg := nats.NewMsg(orderSubject(typ))
	msg.Header = hdr
	msg.Data = orderEnvelope(actor, typ, userID, data)
	s.publishOrderEvent(msg, orderID)
}

func orderSubject(typ string) string { return "orders.events." + strings.TrimPrefix(typ, "order.") }

func orderEnvelope(actor, typ, userID string, data any) []byte {
	raw, _ := json.Marshal(data)
	env, _ := json.Marshal(natsauth.Envelope{ID: fmt.Sprint(time.Now().UnixNano()), Type: typ, Actor: actor,
		UserID: userID, OccurredAt: time.Now().UTC(), Data: raw})
	return env
}

func (s *stack) publishOrderEvent(msg *nats.Msg, orderID string) {
	s.t.Helper()
	var env natsauth.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		s.t.Fatal(err)
	}
	msg.Header.Set(natsauth.HeaderMsgID, fmt.Sprintf("%s:%s:%d", env.Type, orderID, time.Now().UnixNano()))
	if _, err := s.js.PublishMsg(context.Background(), msg); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) created(who, orderID string, cents int) {
	s.orderEvent(who, "order.created", orderID, ttstest.Subject(s.t, s.tokens[who]),
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

// void asks billing to void orderID's invoice as the orders service does on
// behalf of who (see asOrders).
func (s *stack) void(who, orderID string) error {
	ctx, cancel := context.WithTimeout(s.asOrders(who), 3*time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]string{"order_id": orderID})
	_, err := natsauth.Request(ctx, s.nc, ports.VoidSubject, b)
	return err
}

// rawVoid sends the void request with exactly the headers hdr and returns
// the micro error code of the answer (0: voided).
func (s *stack) rawVoid(hdr nats.Header, orderID string) int {
	s.t.Helper()
	msg := nats.NewMsg(ports.VoidSubject)
	msg.Header = hdr
	msg.Data, _ = json.Marshal(map[string]string{"order_id": orderID})
	reply, err := s.nc.RequestMsg(msg, 3*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	code := reply.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return 0
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		s.t.Fatalf("error code %q", code)
	}
	return n
}

// checkTxn verifies what billing sent for sub (meshtest.CheckEventToken).
func (s *stack) checkTxn(t *testing.T, m *jetstream.RawStreamMsg, sub, want string) *authz.Claims {
	t.Helper()
	return meshtest.CheckEventToken(t, s.txn, m, mesh.Billing, sub, want)
}

func serviceCode(err error) int {
	var se *natsauth.ServiceError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// tail reads one of the service's own streams from its start, waiting up
// to 5 s for each message.
func (s *stack) tail(t *testing.T, stream string) *meshtest.Tail {
	return meshtest.NewTail(t, s.billingJS, stream, 5*time.Second)
}

// events reads billing's events from the start of BILLING_EVENTS.
func (s *stack) events(t *testing.T) func() (*jetstream.RawStreamMsg, map[string]any) {
	tl := s.tail(t, adapters.EventsStream)
	return func() (*jetstream.RawStreamMsg, map[string]any) {
		t.Helper()
		m, err := tl.Next()
		if err != nil {
			t.Fatalf("no event: %v", err)
		}
		var env map[string]any
		_ = json.Unmarshal(m.Data, &env)
		return m, env
	}
}

func TestBilling(t *testing.T) {
	s := newStack(t)
	alice := ttstest.Subject(t, s.tokens["alice"])

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
		for _, want := range []struct{ typ, actor, scope string }{{"invoice.paid", alice, "pay:invoices"}, {"invoice.refunded", ttstest.Subject(t, s.tokens["carol"]), "refund:invoices"}} {
			m, env := next()
			if env["type"] != want.typ || env["actor"] != want.actor || env["user_id"] != alice {
				t.Fatalf("event %v, want %s by %s", env, want.typ, want.actor)
			}
			// The fast path publishes under the caller's own transaction,
			// exchanged for their access token, which stays at the edge.
			if m.Header.Get(natsauth.HeaderMsgID) != want.typ+":"+id {
				t.Fatalf("headers %v", m.Header)
			}
			s.checkTxn(t, m, want.actor, want.scope)
			data := env["data"].(map[string]any)
			if data["invoice_id"] != id || data["order_id"] != "ord-life" || data["amount_cents"] != float64(900) {
				t.Fatalf("data %v", data)
			}
		}
		// Every kept revision of the record (the bucket keeps history, and
		// the outbox was in it between the write and the flush) is free of
		// bearer tokens.
		kv, err := s.billingJS.KeyValue(context.Background(), adapters.InvoiceBucket)
		if err != nil {
			t.Fatal(err)
		}
		hist, err := kv.History(context.Background(), "ord-life")
		if err != nil {
			t.Fatal(err)
		}
		sawOutbox := false
		for _, e := range hist {
			assertNoCredential(t, s, e.Value())
			sawOutbox = sawOutbox || strings.Contains(string(e.Value()), `"outbox"`)
		}
		if !sawOutbox {
			t.Fatalf("no revision with an outbox among %d: the check above proved nothing", len(hist))
		}
	})

	t.Run("list: own, by order, other users need read:all-invoices", func(t *testing.T) {
		s.created("bob", "ord-bob", 450)
		s.invoiceOf("bob", "ord-bob")
		bob := ttstest.Subject(t, s.tokens["bob"])
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
		// The TTS gives billing no cancel:orders: a transaction token of
		// billing's own, minted for its own hop, is all of it that could come
		// here.
		if code := s.rawVoid(nats.Header{natsauth.HeaderTxnToken: {s.billingTxn()}}, "ord-void"); code != 403 {
			t.Errorf("billing-service's transaction (not an allowed client): %d", code)
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
		raw := s.metrics(t)
		for _, want := range []string{`billing_invoice_transitions_total{status="paid"}`, "billing_orders_consumer_pending", "billing_outbox_pending 0",
			`http_requests_total{code="200",method="POST",route="/v1/invoices/:id/pay"}`, "billing_authz_decisions_total", "authmesh_events_total"} {
			if !strings.Contains(raw, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestOutboxRelayPublishesWhatACrashLeftBehind writes a paid invoice with its
// owed event the way the use case does, but never flushes, as if the process
// died right after the write: the relay must publish it, as it was sealed for
// the payer.
func TestOutboxRelayPublishesWhatACrashLeftBehind(t *testing.T) {
	s := newStack(t)
	s.created("alice", "ord-crash", 700)
	s.invoiceOf("alice", "ord-crash")
	next := s.events(t)

	kv, err := adapters.EnsureBuckets(context.Background(), s.billingJS, 1)
	if err != nil {
		t.Fatal(err)
	}
	lazy := platform.NewLazyBucket(adapters.InvoiceBucket)
	lazy.Set(kv)
	store := adapters.NewStore(lazy)
	alice := ttstest.Subject(t, s.tokens["alice"])
	// The pay request's context: alice's access token, and the exchange.
	ctx := natsauth.WithOutbound(authz.WithClaims(context.Background(), &authz.Claims{Subject: alice}, s.tokens["alice"]),
		&natsauth.Outbound{Exchanger: s.billing, Scopes: mesh.HopScopes})
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
	// What sits in the bucket is the event sealed for alice, and no
	// credential of hers.
	e, err := kv.Get(context.Background(), "ord-crash")
	if err != nil {
		t.Fatal(err)
	}
	assertNoCredential(t, s, e.Value())
	// The relay holds no token of alice's: it publishes the sealed event,
	// still hers, never one of billing's own.
	m, env := next()
	if env["type"] != "invoice.paid" || m.Header.Get(natsauth.HeaderMsgID) != "invoice.paid:"+domain.InvoiceID("ord-crash") {
		t.Fatalf("event %v %v", env, m.Header)
	}
	if env["actor"] != alice || env["user_id"] != alice {
		t.Fatalf("relayed event: actor %v, user %v; want alice's sealed event", env["actor"], env["user_id"])
	}
	s.checkTxn(t, m, alice, "pay:invoices")
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

// jwtShaped finds compact JWS values (base64url JSON header "eyJ").
var jwtShaped = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`)

// assertNoCredential fails when a stored value holds any of the tenant's
// tokens, or a JWT that is not a transaction token bound to one of billing's
// own events (the sealed events of the outbox, which carry nothing else).
func assertNoCredential(t *testing.T, s *stack, raw []byte) {
	t.Helper()
	for who, tok := range s.tokens {
		if strings.Contains(string(raw), tok) {
			t.Fatalf("stored record holds %s's token", who)
		}
	}
	if rest := jwtShaped.ReplaceAll(raw, nil); strings.Contains(string(rest), "eyJ") {
		t.Fatal("stored record holds a piece of a JWT")
	}
	for _, tok := range jwtShaped.FindAll(raw, -1) {
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(string(tok), ".")[1])
		var c struct {
			Typ  string `json:"typ"`
			TCtx struct {
				Evt *authz.EventBinding `json:"evt"`
			} `json:"tctx"`
		}
		if err != nil || json.Unmarshal(payload, &c) != nil || c.TCtx.Evt == nil || !strings.HasPrefix(c.TCtx.Evt.Subject, "billing.events.") {
			t.Fatalf("stored record holds a JWT that is not bound to a billing event: %d bytes", len(tok))
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
	alice := ttstest.Subject(t, s.tokens["alice"])
	dlq := s.tail(t, adapters.DLQStream)
	cases := []struct {
		name, who string
		applied   bool
		reason    string
	}{
		{"a customer's token", "bob", false, "on_behalf_denied"},
		{"an admin's token", "carol", false, "on_behalf_denied"},
		// ORDERS_EVENTS admits no other client's token at all. The TTS
		// gives billing no cancel:orders: a transaction token of billing's
		// own, minted for its own hop, is all of it that could come here.
		{"another service's transaction", "billing-service", false, "not_authorized: client_not_allowed"},
		{"orders-service's client", "orders-service", true, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orderID := fmt.Sprintf("ord-behalf-%d", i)
			s.created("alice", orderID, 450)
			s.invoiceOf("alice", orderID)
			data := map[string]any{"order_id": orderID, "reason": "test"}
			if c.who == "billing-service" {
				s.rawOrderEvent(nats.Header{natsauth.HeaderTxnToken: {s.billingTxn()}}, "billing-service@clients", "order.cancelled", orderID, alice, data)
			} else {
				s.orderEvent(c.who, "order.cancelled", orderID, alice, data)
			}
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
			m, err := dlq.Next()
			if err != nil {
				t.Fatalf("not dead-lettered: %v", err)
			}
			var env map[string]any
			_ = json.Unmarshal(m.Data, &env)
			if env["type"] != "order.cancelled" || !strings.Contains(string(m.Data), orderID) {
				t.Fatalf("dead letter %s", m.Data)
			}
			if got := m.Header.Get(natsauth.HeaderDLQReason); !strings.HasPrefix(got, c.reason) {
				t.Fatalf("dead-letter reason %q, want %s", got, c.reason)
			}
			if st := s.invoiceOf("alice", orderID)["status"]; st != "open" {
				t.Fatalf("invoice %v after a rejected cancel", st)
			}
		})
	}
}

// TestOnlyThisHopsTransactionTokensAreAccepted: NATS carries transaction
// tokens narrowed to one hop, never access tokens. An order event or a void
// request with an access token in Authorization (how messages carried them
// before the Transaction Token Service), even the owner's own and even beside
// a valid transaction token, an access token where the transaction token
// belongs, or the owner's transaction token minted for another hop (orders
// reading her profile) is refused (dead-lettered, 401/403) and changes
// nothing.
func TestOnlyThisHopsTransactionTokensAreAccepted(t *testing.T) {
	s := newStack(t)
	alice := ttstest.Subject(t, s.tokens["alice"])
	s.created("alice", "ord-bearer", 300)
	s.invoiceOf("alice", "ord-bearer")
	dlq := s.tail(t, adapters.DLQStream)
	txnFor := func(subject string) string {
		msg, err := natsauth.NewMsg(s.asOrders("alice"), subject, nil)
		if err != nil {
			t.Fatal(err)
		}
		return msg.Header.Get(natsauth.HeaderTxnToken)
	}
	valid := txnFor(orderSubject("order.cancelled"))
	profileHop := txnFor("authmesh.users.profile")
	bearer := func(who string) string { return "Bearer " + s.tokens[who] }
	cases := []struct {
		name   string
		actor  string
		hdr    nats.Header
		reason string // of the dead letter
		code   int    // of the void request
	}{
		{"the owner's access token", alice, nats.Header{natsauth.HeaderAuthorization: {bearer("alice")}}, "invalid_token: access_token_on_nats", 401},
		{"orders-service's access token", "orders-service@clients", nats.Header{natsauth.HeaderAuthorization: {bearer("orders-service")}}, "invalid_token: access_token_on_nats", 401},
		{"an access token beside a valid transaction token", alice,
			nats.Header{natsauth.HeaderAuthorization: {bearer("alice")}, natsauth.HeaderTxnToken: {valid}}, "invalid_token: access_token_on_nats", 401},
		{"the owner's access token as Txn-Token", alice, nats.Header{natsauth.HeaderTxnToken: {s.tokens["alice"]}}, "invalid_token", 401},
		{"the owner's transaction token for another hop", alice, nats.Header{natsauth.HeaderTxnToken: {profileHop}}, "not_authorized: wrong_hop_scope", 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.rawOrderEvent(c.hdr, c.actor, "order.cancelled", "ord-bearer", alice, map[string]any{"order_id": "ord-bearer", "reason": "test"})
			m, err := dlq.Next()
			if err != nil {
				t.Fatalf("not dead-lettered: %v", err)
			}
			if got := m.Header.Get(natsauth.HeaderDLQReason); !strings.HasPrefix(got, c.reason) || !strings.Contains(string(m.Data), "ord-bearer") {
				t.Fatalf("dead letter %s, reason %q, want %s", m.Data, got, c.reason)
			}
			// Dead letters are kept for operators: no credential in them.
			for _, h := range []string{natsauth.HeaderAuthorization, natsauth.HeaderTxnToken} {
				if _, ok := m.Header[h]; ok {
					t.Fatalf("dead letter keeps %s", h)
				}
			}
			if code := s.rawVoid(c.hdr, "ord-bearer"); code != c.code {
				t.Fatalf("void request: %d, want %d", code, c.code)
			}
			if st := s.invoiceOf("alice", "ord-bearer")["status"]; st != "open" {
				t.Fatalf("invoice %v", st)
			}
		})
	}
	// The same void with this hop's transaction token does take effect: the
	// refusals above were not an invoice that cannot be voided.
	if code := s.rawVoid(nats.Header{natsauth.HeaderTxnToken: {valid}}, "ord-bearer"); code != 0 {
		t.Fatalf("void with the hop's transaction token: %d", code)
	}
	if st := s.invoiceOf("alice", "ord-bearer")["status"]; st != "void" {
		t.Fatalf("invoice %v after the owner's void", st)
	}
}

// TestPaymentWaitsForThePayerWhenItsSealRanOut: a payment whose sealed
// token ran out before it could be published (here, a record from before
// events were sealed, which holds none) cannot be announced by billing: its
// own identity may not say that anyone paid. The relay leaves it in the
// record, and the payer's next request seals it again under her own token
// and publishes it. Someone else's request does not.
func TestPaymentWaitsForThePayerWhenItsSealRanOut(t *testing.T) {
	s := newStack(t)
	alice := ttstest.Subject(t, s.tokens["alice"])
	s.created("alice", "ord-late", 500)
	s.invoiceOf("alice", "ord-late")
	ctx := context.Background()
	kv, err := s.billingJS.KeyValue(ctx, adapters.InvoiceBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "ord-late")
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	id := domain.InvoiceID("ord-late")
	rec["status"], rec["paid_at"] = "paid", now
	rec["outbox"] = []map[string]any{{"id": "invoice.paid:" + id, "type": "invoice.paid", "invoice_id": id, "order_id": "ord-late",
		"user_id": alice, "amount_cents": 500, "recorded_at": now}}
	b, _ := json.Marshal(rec)
	tl := meshtest.NewTail(t, s.billingJS, adapters.EventsStream, 3*time.Second)
	if _, err := kv.Update(ctx, "ord-late", b, e.Revision()); err != nil {
		t.Fatal(err)
	}
	if m, err := tl.Next(); err == nil {
		t.Fatalf("the relay published an unsealed payment: %s", m.Data)
	}
	s.wantMetric(t, "billing_outbox_waiting 1")
	if code, _, _, _ := s.do("GET", "/v1/invoices", "bob"); code != http.StatusOK {
		t.Fatalf("bob's list: %d", code)
	}
	if m, err := tl.Next(); err == nil {
		t.Fatalf("bob's request published alice's payment: %s", m.Data)
	}
	if code, _, _, _ := s.do("GET", "/v1/invoices", "alice"); code != http.StatusOK {
		t.Fatalf("alice's list: %d", code)
	}
	m, err := tl.Next()
	if err != nil {
		t.Fatalf("alice's request did not publish her payment: %v", err)
	}
	var env map[string]any
	_ = json.Unmarshal(m.Data, &env)
	if env["type"] != "invoice.paid" || env["actor"] != alice || m.Header.Get(natsauth.HeaderMsgID) != "invoice.paid:"+id {
		t.Fatalf("published %s %v", m.Data, m.Header)
	}
	s.checkTxn(t, m, alice, "pay:invoices")
	authztest.Eventually(t, 5*time.Second, func() bool {
		e, err := kv.Get(ctx, "ord-late")
		return err == nil && !strings.Contains(string(e.Value()), `"outbox"`)
	}, "the outbox cleared")
	s.wantMetric(t, "billing_outbox_waiting 0")
}

// metrics returns billing's /metrics.
func (s *stack) metrics(t *testing.T) string {
	t.Helper()
	return string(platformtest.Do(t, http.MethodGet, s.base+"/metrics", "", "").Body)
}

// wantMetric fails unless billing's /metrics holds line.
func (s *stack) wantMetric(t *testing.T, line string) {
	t.Helper()
	if !strings.Contains(s.metrics(t), "\n"+line+"\n") {
		t.Fatalf("metrics lack %q", line)
	}
}
