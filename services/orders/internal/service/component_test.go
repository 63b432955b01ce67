package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/pkg/platform/platformtest"
	"github.com/authmesh/authmesh/services/orders/internal/adapters"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/ports"
	"github.com/authmesh/authmesh/services/orders/internal/service"
	"github.com/authmesh/authmesh/services/tts/ttstest"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// stack is NATS with the mesh's accounts, devtenant, the real Transaction
// Token Service, fake users/billing responders and the orders service, all
// in-process.
type stack struct {
	t       *testing.T
	orders  jetstream.JetStream // orders' own account: ORDERS_EVENTS, ORDERS_DLQ
	ms      *ttstest.Stack
	tenant  *tenant.Server
	base    string // orders HTTP base URL
	billing *fakeBilling
	users   *fakeUsers
	app     *platform.App
	// peers are the users and billing services as the tests play them, by
	// workload name.
	peers map[string]*ttstest.Peer
}

// fakeUsers answers authmesh.users.profile for the caller named by the
// transaction token.
type fakeUsers struct {
	mu  sync.Mutex
	txn map[string]string // sub → the last transaction token orders sent for it
	// fail, when set for a sub, is the micro error (code, description) the
	// profile endpoint answers that caller with instead of a profile.
	fail map[string][2]string
}

func (u *fakeUsers) failFor(sub, code, desc string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.fail == nil {
		u.fail = map[string][2]string{}
	}
	u.fail[sub] = [2]string{code, desc}
}

// fakeBilling answers authmesh.billing.orders.void: 409 for paid orders.
type fakeBilling struct {
	mu     sync.Mutex
	paid   map[string]bool
	voided map[string]string // order id → sub of the token that asked
}

// verifiedTxn is what the real users and billing services' natsauth does
// before their handlers run: refuse an access token in Authorization,
// verify the transaction token, check the endpoint's scope. It returns the
// token and its subject, or the micro error (code, description) to answer
// with.
func verifiedTxn(v *authz.TxnValidator, h micro.Headers, scope string) (tok, sub string, refused []string) {
	if _, ok := h[natsauth.HeaderAuthorization]; ok {
		return "", "", []string{"401", "invalid_token: NATS carries transaction tokens (Txn-Token), never access tokens (Authorization)"}
	}
	tok = nats.Header(h).Get(natsauth.HeaderTxnToken)
	c, err := v.Validate(context.Background(), tok)
	switch {
	case err != nil:
		return "", "", []string{"401", "invalid_token: the token is not valid"}
	case !c.HasPermission(scope):
		return "", "", []string{"403", "insufficient_scope: the token lacks a required permission"}
	}
	return tok, c.Subject, nil
}

// startFakes serves the profile endpoint on usersNC and the void endpoint
// on billingNC, in those services' accounts.
func startFakes(t *testing.T, usersNC, billingNC *nats.Conn, v *authz.TxnValidator) (*fakeUsers, *fakeBilling) {
	t.Helper()
	fu := &fakeUsers{txn: map[string]string{}}
	fb := &fakeBilling{paid: map[string]bool{}, voided: map[string]string{}}
	us, err := micro.AddService(usersNC, micro.Config{Name: "users", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: adapters.ProfileSubject, Handler: micro.HandlerFunc(func(r micro.Request) {
			tok, sub, refused := verifiedTxn(v, r.Headers(), "read:profile")
			if refused != nil {
				_ = r.Error(refused[0], refused[1], nil)
				return
			}
			fu.mu.Lock()
			fu.txn[sub] = tok
			f, failing := fu.fail[sub]
			fu.mu.Unlock()
			if failing {
				_ = r.Error(f[0], f[1], nil)
				return
			}
			_ = r.RespondJSON(map[string]any{"user_id": sub, "email": "x@authmesh.dev", "shipping_address": map[string]string{
				"line1": "1 Tea Street", "city": "Berlin", "postal_code": "10115", "country": "DE"}})
		})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = us.Stop() })
	bs, err := micro.AddService(billingNC, micro.Config{Name: "billing", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: adapters.VoidSubject, Handler: micro.HandlerFunc(func(r micro.Request) {
			var req struct {
				OrderID string `json:"order_id"`
			}
			_, sub, refused := verifiedTxn(v, r.Headers(), "cancel:orders")
			if refused != nil {
				_ = r.Error(refused[0], refused[1], nil)
				return
			}
			if json.Unmarshal(r.Data(), &req) != nil || req.OrderID == "" {
				_ = r.Error("400", "bad request", nil)
				return
			}
			fb.mu.Lock()
			defer fb.mu.Unlock()
			if fb.paid[req.OrderID] {
				_ = r.Error("409", "invoice already paid", nil)
				return
			}
			fb.voided[req.OrderID] = sub
			_ = r.RespondJSON(map[string]string{"status": "void"})
		})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Stop() })
	return fu, fb
}

func (u *fakeUsers) txnOf(sub string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.txn[sub]
}

func (b *fakeBilling) setPaid(id string) { b.mu.Lock(); b.paid[id] = true; b.mu.Unlock() }
func (b *fakeBilling) voidedBy(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.voided[id]
}

func newStack(t *testing.T) *stack { return newStackWith(t, "") }

// newStackWith is newStack with devtenant issuing tokens in dialect ("" is
// deploy/tenant.yaml's).
func newStackWith(t *testing.T, dialect string) *stack {
	t.Helper()
	ms := ttstest.NewStack(t, ttstest.StackConfig{NATS: ttstest.WebSocket, TokenDialect: dialect})
	tts := ms.StartTTS(t, nil)
	// What the users and billing services own, created here in their place,
	// each in its own account: their event streams with the durables orders
	// binds to (the revocation bucket every validator watches comes with the
	// stack).
	peers := map[string]*ttstest.Peer{
		mesh.Billing: ms.Peer(t, mesh.Billing, jetstream.StreamConfig{Name: ports.BillingStream, Subjects: []string{"billing.events.>"}}),
		mesh.Users:   ms.Peer(t, mesh.Users, jetstream.StreamConfig{Name: ports.UsersStream, Subjects: []string{"users.events.>"}}),
	}
	_, ordersJS := meshtest.Connect(t, ms.NATS, mesh.Orders)
	users, billing := startFakes(t, peers[mesh.Users].NC, peers[mesh.Billing].NC, ttstest.TxnValidator(t, tts.JWKSURL))
	cfg := ms.ServiceConfig(t, service.Name, tts, map[string]string{"ORDERS_LOG_LEVEL": "error"})
	st := &stack{t: t, orders: ordersJS, ms: ms, tenant: ms.Tenant, users: users, billing: billing, peers: peers}
	st.base, _ = platformtest.Serve(t, func(ctx context.Context, opts platform.Options) error {
		opts.BeforeRun = func(a *platform.App) { st.app = a }
		return service.RunWith(ctx, cfg, opts,
			service.Tuning{RelayEvery: 100 * time.Millisecond, RelayGrace: 200 * time.Millisecond, MetricsEvery: 100 * time.Millisecond})
	})
	return st
}

func (s *stack) eventually(what string, d time.Duration, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *stack) token(email string) string { return s.ms.UserToken(s.t, email, "") }

func (s *stack) clientToken(client string) string { return s.ms.ClientToken(s.t, client) }

type resp = platformtest.Response

func (s *stack) do(method, path, token, body string, hdr ...string) resp {
	s.t.Helper()
	return platformtest.Do(s.t, method, s.base+path, token, body, hdr...)
}

type orderOut struct {
	ID     string `json:"id"`
	UserID string `json:"user_id"`
	Status string `json:"status"`
	Items  []struct {
		SKU            string `json:"sku"`
		Quantity       int    `json:"quantity"`
		UnitPriceCents int64  `json:"unit_price_cents"`
		LineTotalCents int64  `json:"line_total_cents"`
	} `json:"items"`
	TotalCents      int64             `json:"total_cents"`
	Currency        string            `json:"currency"`
	ShippingAddress map[string]string `json:"shipping_address"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
}

func (s *stack) placeOrder(token, body string) orderOut {
	s.t.Helper()
	r := s.do(http.MethodPost, "/v1/orders", token, body)
	if r.Status != http.StatusCreated {
		s.t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var o orderOut
	r.JSON(s.t, &o)
	return o
}

func (s *stack) order(id string) orderOut {
	s.t.Helper()
	r := s.do(http.MethodGet, "/v1/orders/"+id, s.token("carol@authmesh.dev"), "")
	if r.Status != http.StatusOK {
		s.t.Fatalf("get %s: %d %s", id, r.Status, r.Body)
	}
	var o orderOut
	r.JSON(s.t, &o)
	return o
}

// events reads every message on subject in ORDERS_EVENTS, one by one with
// STREAM.MSG.GET: the mesh lets orders read its own streams so, not through
// consumers of its own.
func (s *stack) events(subject string) []*jetstream.RawStreamMsg {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := s.orders.Stream(ctx, adapters.EventsStream)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := max(st.CachedInfo().State.FirstSeq, 1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// tail reads one of the service's own streams from its start, waiting up
// to 10 s for each message.
func (s *stack) tail(t *testing.T, stream string) *meshtest.Tail {
	return meshtest.NewTail(t, s.orders, stream, 10*time.Second)
}

func envelopeOf(t *testing.T, m *jetstream.RawStreamMsg) natsauth.Envelope {
	t.Helper()
	e, err := natsauth.DecodeEnvelope(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return *e
}

// publishAs publishes an event on another service's stream on behalf of
// token's holder, the way that service would: the token exchanged by the
// service's own client (mesh.Hops names it) for a transaction token
// narrowed to the hop.
func (s *stack) publishAs(token, subj, typ, entityID, userID string, data any) {
	s.t.Helper()
	p := s.sender(subj)
	if _, err := natsauth.PublishEvent(p.Outbound(context.Background(), token), p.JS, subj, typ, entityID, userID, data); err != nil {
		s.t.Fatal(err)
	}
}

// sender is the peer that sends subj (mesh.Hops).
func (s *stack) sender(subj string) *ttstest.Peer {
	s.t.Helper()
	for _, h := range mesh.Hops {
		if p, ok := s.peers[h.Sender]; ok && h.Subject == subj {
			return p
		}
	}
	s.t.Fatalf("no peer sends %s", subj)
	return nil
}

// publishRaw publishes an event with exactly the headers hdr, as whoever
// holds the sending service's NATS identity could (no other account may
// publish there).
func (s *stack) publishRaw(hdr nats.Header, subj, typ, actor, entityID, userID string, data any) {
	s.t.Helper()
	raw, _ := json.Marshal(data)
	env, _ := json.Marshal(natsauth.Envelope{ID: app.NewUUID(), Type: typ, Actor: actor, UserID: userID,
		OccurredAt: time.Now().UTC(), Data: raw})
	msg := nats.NewMsg(subj)
	msg.Header = hdr
	msg.Header.Set(natsauth.HeaderMsgID, typ+":"+entityID+":"+app.NewUUID())
	msg.Data = env
	if _, err := s.sender(subj).JS.PublishMsg(context.Background(), msg); err != nil {
		s.t.Fatal(err)
	}
}

// checkTxn verifies what orders sent for sub (meshtest.CheckEventToken).
func (s *stack) checkTxn(t *testing.T, m *jetstream.RawStreamMsg, sub, want string) *authz.Claims {
	t.Helper()
	return meshtest.CheckEventToken(t, s.app.TxnValidator, m, mesh.Orders, sub, want)
}

const mugs = `{"items":[{"sku":"mug","quantity":2},{"sku":"tea-green","quantity":1}]}`

func TestCatalogIsPublic(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do(http.MethodGet, "/v1/catalog", "", "")
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var got []map[string]any
	r.JSON(t, &got)
	want := map[string]float64{"tea-green": 450, "tea-black": 390, "mug": 1200, "kettle": 4500}
	if len(got) != len(want) {
		t.Fatalf("catalog %v", got)
	}
	for _, p := range got {
		if want[p["sku"].(string)] != p["unit_price_cents"].(float64) || p["currency"] != "EUR" || p["name"] == "" {
			t.Fatalf("product %v", p)
		}
	}
}

func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice, bob, dave, carol := s.token("alice@authmesh.dev"), s.token("bob@authmesh.dev"), s.token("dave@authmesh.dev"), s.token("carol@authmesh.dev")
	m2m := s.clientToken("orders-service")

	created := s.do(http.MethodPost, "/v1/orders", alice, mugs)
	if created.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", created.Status, created.Body)
	}
	var ao orderOut
	created.JSON(t, &ao)
	if ao.Status != "pending" || ao.TotalCents != 2*1200+450 || ao.Currency != "EUR" || len(ao.Items) != 2 ||
		ao.Items[0].UnitPriceCents != 1200 || ao.Items[0].LineTotalCents != 2400 || ao.ShippingAddress["city"] != "Berlin" ||
		ao.CreatedAt.IsZero() || ao.UpdatedAt.IsZero() || !strings.HasPrefix(ao.UserID, "auth0|") {
		t.Fatalf("created order %+v", ao)
	}
	bobOrder := s.placeOrder(bob, `{"items":[{"sku":"kettle","quantity":1}]}`)

	manyLines := `{"items":[` + strings.TrimSuffix(strings.Repeat(`{"sku":"mug","quantity":1},`, 51), ",") + `]}`
	huge := `{"items":[{"sku":"` + strings.Repeat("x", 100<<10) + `","quantity":1}]}`
	tests := []struct {
		name, method, path, token, body string
		want                            int
		wantErr                         string // error code in the body
		wantField                       string // field in a 422
		wantChallenge                   string // substring of WWW-Authenticate
	}{
		{"create without token", "POST", "/v1/orders", "", mugs, 401, "missing_token", "", `Bearer realm="authmesh"`},
		{"create with a bad token", "POST", "/v1/orders", alice + "x", mugs, 401, "invalid_token", "", `error="invalid_token"`},
		{"create with an M2M token", "POST", "/v1/orders", m2m, mugs, 403, "insufficient_scope", "", `error="insufficient_scope"`},
		{"create malformed JSON", "POST", "/v1/orders", alice, `{"items":[`, 400, "malformed_json", "", ""},
		{"create unknown sku", "POST", "/v1/orders", alice, `{"items":[{"sku":"spoon","quantity":1}]}`, 422, "validation_failed", "items[0].sku", ""},
		{"create quantity 0", "POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":0}]}`, 422, "validation_failed", "items[0].quantity", ""},
		{"create quantity 101", "POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":101}]}`, 422, "validation_failed", "items[0].quantity", ""},
		{"create no lines", "POST", "/v1/orders", alice, `{"items":[]}`, 422, "validation_failed", "items", ""},
		{"create items missing", "POST", "/v1/orders", alice, `{}`, 422, "validation_failed", "items", ""},
		{"create 51 lines", "POST", "/v1/orders", alice, manyLines, 422, "validation_failed", "items", ""},
		{"create client price ignored field", "POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":1,"unit_price_cents":1}]}`, 422, "validation_failed", "unit_price_cents", ""},
		{"create quantity as string", "POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":"2"}]}`, 422, "validation_failed", "", ""},
		{"create body too large", "POST", "/v1/orders", alice, huge, 413, "", "", ""},
		{"list without token", "GET", "/v1/orders", "", "", 401, "missing_token", "", `Bearer realm="authmesh"`},
		{"list another user's without read:all-orders", "GET", "/v1/orders?user_id=" + bobOrder.UserID, alice, "", 403, "insufficient_scope", "", `scope="read:all-orders"`},
		{"get own", "GET", "/v1/orders/" + ao.ID, alice, "", 200, "", "", ""},
		{"get someone else's", "GET", "/v1/orders/" + ao.ID, bob, "", 404, "not_found", "", ""},
		{"get any as support", "GET", "/v1/orders/" + ao.ID, dave, "", 200, "", "", ""},
		{"get unknown", "GET", "/v1/orders/" + app.NewUUID(), alice, "", 404, "not_found", "", ""},
		{"get malformed id", "GET", "/v1/orders/*", alice, "", 404, "not_found", "", ""},
		{"get without token", "GET", "/v1/orders/" + ao.ID, "", "", 401, "missing_token", "", ""},
		{"cancel someone else's", "POST", "/v1/orders/" + ao.ID + "/cancel", bob, "", 404, "not_found", "", ""},
		{"cancel someone else's as admin", "POST", "/v1/orders/" + ao.ID + "/cancel", carol, "", 404, "not_found", "", ""},
		{"cancel without token", "POST", "/v1/orders/" + ao.ID + "/cancel", "", "", 401, "missing_token", "", ""},
		{"cancel with an M2M token", "POST", "/v1/orders/" + ao.ID + "/cancel", m2m, "", 403, "insufficient_scope", "", ""},
		{"cancel unknown", "POST", "/v1/orders/" + app.NewUUID() + "/cancel", alice, "", 404, "not_found", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, tc.token, tc.body)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
			if tc.want >= 400 {
				var e struct {
					Error   string            `json:"error"`
					Message string            `json:"message"`
					Fields  map[string]string `json:"fields"`
				}
				r.JSON(t, &e)
				if e.Message == "" || (tc.wantErr != "" && e.Error != tc.wantErr) {
					t.Fatalf("error body %s", r.Body)
				}
				if tc.wantField != "" && e.Fields[tc.wantField] == "" {
					t.Fatalf("no message for %s in %s", tc.wantField, r.Body)
				}
				if tc.token != "" && strings.Contains(string(r.Body), tc.token[:40]) {
					t.Fatal("token echoed in the error body")
				}
			}
			if tc.wantChallenge != "" && !strings.Contains(r.Header.Get("WWW-Authenticate"), tc.wantChallenge) {
				t.Fatalf("WWW-Authenticate %q lacks %q", r.Header.Get("WWW-Authenticate"), tc.wantChallenge)
			}
			if tc.wantErr == "missing_token" {
				// Contract §5 to the letter for a client reading one value;
				// DPoP (on by default) offers its challenge in a field of
				// its own after it.
				ch := r.Header.Values("WWW-Authenticate")
				if len(ch) != 2 || ch[0] != `Bearer realm="authmesh"` || !strings.HasPrefix(ch[1], `DPoP realm="authmesh", algs="`) {
					t.Fatalf("WWW-Authenticate fields %q, want the Bearer challenge, then DPoP's", ch)
				}
			}
		})
	}

	t.Run("list own only", func(t *testing.T) {
		var got []orderOut
		s.do("GET", "/v1/orders", alice, "").JSON(t, &got)
		if len(got) != 1 || got[0].ID != ao.ID {
			t.Fatalf("alice sees %+v", got)
		}
	})
	t.Run("list another user's with read:all-orders", func(t *testing.T) {
		var got []orderOut
		r := s.do("GET", "/v1/orders?user_id="+bobOrder.UserID, dave, "")
		r.JSON(t, &got)
		if r.Status != 200 || len(got) != 1 || got[0].ID != bobOrder.ID {
			t.Fatalf("dave sees %d %+v", r.Status, got)
		}
	})
	t.Run("cancel own pending, then again", func(t *testing.T) {
		r := s.do("POST", "/v1/orders/"+ao.ID+"/cancel", alice, "")
		var o orderOut
		r.JSON(t, &o)
		if r.Status != 200 || o.Status != "cancelled" {
			t.Fatalf("cancel: %d %s", r.Status, r.Body)
		}
		if by := s.billing.voidedBy(ao.ID); by != ao.UserID {
			t.Fatalf("billing void asked by %q, want the caller %q", by, ao.UserID)
		}
		if r := s.do("POST", "/v1/orders/"+ao.ID+"/cancel", alice, ""); r.Status != 409 {
			t.Fatalf("second cancel: %d %s", r.Status, r.Body)
		}
	})
	t.Run("cancel refused by billing because paid", func(t *testing.T) {
		o := s.placeOrder(alice, mugs)
		s.billing.setPaid(o.ID)
		if r := s.do("POST", "/v1/orders/"+o.ID+"/cancel", alice, ""); r.Status != 409 {
			t.Fatalf("cancel of a paid invoice's order: %d %s", r.Status, r.Body)
		}
		if got := s.order(o.ID); got.Status != "pending" {
			t.Fatalf("order became %s", got.Status)
		}
	})
	t.Run("events carry the caller's transaction and a de-duplication id", func(t *testing.T) {
		var found bool
		for _, m := range s.events(adapters.SubjectCreated) {
			e := envelopeOf(t, m)
			if e.UserID != ao.UserID || !strings.Contains(string(e.Data), ao.ID) {
				continue
			}
			found = true
			if e.Type != "order.created" || e.Actor != ao.UserID || m.Header.Get(natsauth.HeaderMsgID) != "order.created:"+ao.ID {
				t.Fatalf("event %+v headers %v", e, m.Header)
			}
			s.checkTxn(t, m, ao.UserID, "create:orders")
		}
		if !found {
			t.Fatal("no order.created event for alice's order")
		}
		cancelled := s.events(adapters.SubjectCancelled)
		if len(cancelled) != 1 || envelopeOf(t, cancelled[0]).Actor != ao.UserID {
			t.Fatalf("cancelled events: %d", len(cancelled))
		}
		s.checkTxn(t, cancelled[0], ao.UserID, "cancel:orders")
	})
	t.Run("metrics", func(t *testing.T) {
		r := s.do("GET", "/metrics", "", "")
		for _, name := range []string{"orders_outbox_pending", "orders_consumer_pending_messages"} {
			if !strings.Contains(string(r.Body), name) {
				t.Fatalf("/metrics lacks %s", name)
			}
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice, bob := s.token("alice@authmesh.dev"), s.token("bob@authmesh.dev")
	first := s.do("POST", "/v1/orders", alice, mugs, "Idempotency-Key", "k-1")
	var o1 orderOut
	first.JSON(t, &o1)
	if first.Status != 201 {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	// Same body with other formatting is the same request.
	again := s.do("POST", "/v1/orders", alice, " {\"items\": [{\"quantity\":2, \"sku\":\"mug\"},{\"sku\":\"tea-green\",\"quantity\":1}]}", "Idempotency-Key", "k-1")
	var o2 orderOut
	again.JSON(t, &o2)
	if again.Status != 201 || o2.ID != o1.ID || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", again.Status, again.Body)
	}
	if r := s.do("POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":3}]}`, "Idempotency-Key", "k-1"); r.Status != 409 {
		t.Fatalf("different body: %d %s", r.Status, r.Body)
	}
	if r := s.do("POST", "/v1/orders", bob, mugs, "Idempotency-Key", "k-1"); r.Status != 201 {
		t.Fatalf("bob's own key: %d %s", r.Status, r.Body)
	}
	if r := s.do("POST", "/v1/orders", alice, mugs, "Idempotency-Key", strings.Repeat("k", 300)); r.Status != 422 {
		t.Fatalf("overlong key: %d %s", r.Status, r.Body)
	}

	const n = 10
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", s.base+"/v1/orders", bytes.NewBufferString(mugs))
			req.Header.Set("Authorization", "Bearer "+alice)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "k-concurrent")
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Body.Close()
			var o orderOut
			if err := json.NewDecoder(r.Body).Decode(&o); err != nil || r.StatusCode != 201 {
				t.Errorf("concurrent: %d %v", r.StatusCode, err)
				return
			}
			ids <- o.ID
		})
	}
	wg.Wait()
	close(ids)
	distinct := map[string]bool{}
	for id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 1 {
		t.Fatalf("%d orders for one key", len(distinct))
	}
	var list []orderOut
	s.do("GET", "/v1/orders", alice, "").JSON(t, &list)
	if len(list) != 2 {
		t.Fatalf("alice has %d orders, want 2 (k-1 and k-concurrent)", len(list))
	}
}

func TestOutboxReplaysAfterPublishFailure(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice := s.token("alice@authmesh.dev")
	ctx := context.Background()
	// Publishing fails while ORDERS_EVENTS refuses every event: it takes
	// none larger than a byte (the mesh lets orders update its stream, not
	// delete it).
	st, err := s.orders.Stream(ctx, adapters.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	tiny := st.CachedInfo().Config
	tiny.MaxMsgSize = 1
	if _, err := s.orders.UpdateStream(ctx, tiny); err != nil {
		t.Fatal(err)
	}
	o := s.placeOrder(alice, mugs)
	if n := len(s.events(adapters.SubjectCreated)); n != 0 {
		t.Fatalf("%d created events while the stream refused them", n)
	}
	if err := mesh.Provision(ctx, s.orders, mesh.Orders, 1); err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	s.eventually("the relayed order.created", 10*time.Second, func() bool {
		msgs = s.events(adapters.SubjectCreated)
		return len(msgs) > 0
	})
	if len(msgs) != 1 {
		t.Fatalf("%d created events", len(msgs))
	}
	e := envelopeOf(t, msgs[0])
	if e.Actor != o.UserID || e.UserID != o.UserID || !strings.Contains(string(e.Data), o.ID) ||
		msgs[0].Header.Get(natsauth.HeaderMsgID) != "order.created:"+o.ID {
		t.Fatalf("relayed event %+v", e)
	}
	// The relayed token is the one sealed with the event at alice's
	// request: hers, bound to exactly this message. The service's own
	// identity cannot announce an order.
	cl := s.checkTxn(t, msgs[0], o.UserID, "create:orders")
	if cl.IsM2M() || cl.Event == nil || !cl.Event.Matches(msgs[0].Subject, msgs[0].Data) {
		t.Fatalf("relayed token: %+v", cl)
	}
	// Nothing is relayed twice.
	time.Sleep(500 * time.Millisecond)
	if n := len(s.events(adapters.SubjectCreated)); n != 1 {
		t.Fatalf("%d created events after the relay settled", n)
	}
}

func TestInvoiceEventsMoveOrders(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice, carol := s.token("alice@authmesh.dev"), s.token("carol@authmesh.dev")
	bob := s.token("bob@authmesh.dev")
	o := s.placeOrder(alice, mugs)
	data := map[string]any{"invoice_id": "inv-1", "order_id": o.ID, "amount_cents": o.TotalCents}
	for range 3 { // redelivered or republished: one transition
		s.publishAs(alice, "billing.events.invoice.paid", "invoice.paid", "inv-1", o.UserID, data)
	}
	s.eventually("order paid", 10*time.Second, func() bool { return s.order(o.ID).Status == "paid" })
	// Bob cannot pay alice's order by publishing on her behalf.
	other := s.placeOrder(alice, mugs)
	s.publishAs(bob, "billing.events.invoice.paid", "invoice.paid", "inv-2", other.UserID,
		map[string]any{"invoice_id": "inv-2", "order_id": other.ID, "amount_cents": 1})
	s.publishAs(carol, "billing.events.invoice.refunded", "invoice.refunded", "inv-1", o.UserID, data)
	s.eventually("order refunded", 10*time.Second, func() bool { return s.order(o.ID).Status == "refunded" })
	if got := s.order(other.ID).Status; got != "pending" {
		t.Fatalf("order paid by someone else's event: %s", got)
	}
}

func TestBlockedUsersPendingOrdersAreCancelled(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice, bob, carol := s.token("alice@authmesh.dev"), s.token("bob@authmesh.dev"), s.token("carol@authmesh.dev")
	p1 := s.placeOrder(alice, mugs)
	p2 := s.placeOrder(alice, mugs)
	paid := s.placeOrder(alice, mugs)
	bobs := s.placeOrder(bob, mugs)
	s.publishAs(alice, "billing.events.invoice.paid", "invoice.paid", "inv-p", paid.UserID,
		map[string]any{"invoice_id": "inv-p", "order_id": paid.ID, "amount_cents": paid.TotalCents})
	s.eventually("paid", 10*time.Second, func() bool { return s.order(paid.ID).Status == "paid" })

	// A customer cannot block anyone: the users service gets no block:users
	// transaction for bob, and the transaction token of his it did receive
	// (orders reading his profile), put on an event about alice, is
	// dead-lettered.
	if _, err := s.peers[mesh.Users].Txn.Exchange(context.Background(), bob, mesh.HopScopes("users.events.blocked")); authz.CodeOf(err) != authz.CodeInsufficientScope {
		t.Fatalf("bob's token exchanged for a block: %v", err)
	}
	bobTxn := s.users.txnOf(bobs.UserID)
	if bobTxn == "" {
		t.Fatal("users never received bob's transaction token")
	}
	s.publishRaw(nats.Header{natsauth.HeaderTxnToken: {bobTxn}}, "users.events.blocked", "user.blocked", bobs.UserID, "forged-"+p1.UserID, p1.UserID,
		map[string]string{"user_id": p1.UserID, "at": time.Now().UTC().Format(time.RFC3339)})
	s.publishAs(carol, "users.events.blocked", "user.blocked", p1.UserID, p1.UserID, map[string]string{"user_id": p1.UserID, "at": time.Now().UTC().Format(time.RFC3339)})
	s.eventually("pending orders cancelled", 10*time.Second, func() bool {
		return s.order(p1.ID).Status == "cancelled" && s.order(p2.ID).Status == "cancelled"
	})
	if st := s.order(paid.ID).Status; st != "paid" {
		t.Fatalf("paid order became %s", st)
	}
	if st := s.order(bobs.ID).Status; st != "pending" {
		t.Fatalf("bob's order became %s", st)
	}
	for _, id := range []string{p1.ID, p2.ID} {
		if by := s.billing.voidedBy(id); by != "orders-service@clients" {
			t.Fatalf("void of %s asked by %q, want the service identity", id, by)
		}
	}
	cancelled := s.events(adapters.SubjectCancelled)
	if len(cancelled) != 2 {
		t.Fatalf("%d order.cancelled events", len(cancelled))
	}
	for _, m := range cancelled {
		if e := envelopeOf(t, m); e.Actor != "orders-service@clients" || e.UserID != p1.UserID {
			t.Fatalf("cancelled event %+v", e)
		}
	}
	s.eventually("bob's forged block in the dead-letter stream", 10*time.Second, func() bool {
		st, err := s.orders.Stream(context.Background(), adapters.DLQStream)
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs >= 1
	})

}

// TestProfileErrorsReachTheCaller: what the users profile endpoint answers
// on POST /v1/orders comes back to the caller as contract §5 says, not as a
// generic 503 or a misleading "no such order". The descriptions are what
// natsauth's service side sends ("<authz code>: <detail>").
func TestProfileErrorsReachTheCaller(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	tok := s.token("bob@authmesh.dev")
	bob := ttstest.Subject(t, tok)
	tests := []struct {
		name, code, desc string
		want             int
		wantErr          string
		wantHeader       string // header name
		wantValue        string // substring of that header
	}{
		{"token revoked mid-request", "401", "invalid_token: token revoked", 401, "invalid_token", "WWW-Authenticate", `error="invalid_token"`},
		{"token lacks the profile permission", "403", "insufficient_scope: the token lacks a required permission", 403, "insufficient_scope",
			"WWW-Authenticate", `error="insufficient_scope", scope="read:profile"`},
		{"user deleted after the token was issued", "404", "user not found", 401, "invalid_token", "WWW-Authenticate", `error="invalid_token"`},
		{"users has no signing keys", "503", "keys_unavailable: signing keys are unavailable, retry later", 503, "temporarily_unavailable", "Retry-After", "30"},
		{"users' tenant is down", "503", "a dependency is unavailable; retry later", 503, "unavailable", "", ""},
		{"orders forwarded no token (our bug, not the caller's)", "401", "missing_token: a transaction token (Txn-Token) is required", 503, "unavailable", "", ""},
		{"users failed", "500", "internal error", 503, "unavailable", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.users.failFor(bob, tc.code, tc.desc)
			r := s.do(http.MethodPost, "/v1/orders", tok, mugs)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
			var e struct{ Error, Message string }
			r.JSON(t, &e)
			if e.Error != tc.wantErr || e.Message == "" {
				t.Fatalf("body %s, want error %q", r.Body, tc.wantErr)
			}
			if tc.wantHeader != "" && !strings.Contains(r.Header.Get(tc.wantHeader), tc.wantValue) {
				t.Fatalf("%s %q lacks %q", tc.wantHeader, r.Header.Get(tc.wantHeader), tc.wantValue)
			}
			if tc.want != 401 && tc.want != 403 && r.Header.Get("WWW-Authenticate") != "" {
				t.Fatalf("WWW-Authenticate %q on a %d", r.Header.Get("WWW-Authenticate"), tc.want)
			}
		})
	}
}

// TestOnlyThisHopsTransactionTokensAreAccepted: NATS carries transaction
// tokens narrowed to one hop, never access tokens. An invoice or user event
// with an access token in Authorization (how events carried them before the
// Transaction Token Service), even beside a valid transaction token, an
// access token where the transaction token belongs, or the actor's own
// transaction token minted for another hop (the profile read orders made for
// them, as the users service received it) is dead-lettered and moves no
// order.
func TestOnlyThisHopsTransactionTokensAreAccepted(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice, carol := s.token("alice@authmesh.dev"), s.token("carol@authmesh.dev")
	o := s.placeOrder(alice, mugs)
	co := s.placeOrder(carol, mugs)
	dlq := s.tail(t, adapters.DLQStream)
	payTxn, err := s.peers[mesh.Billing].Txn.Exchange(context.Background(), alice, mesh.HopScopes("billing.events.invoice.paid"))
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) string { return "Bearer " + tok }
	paid := map[string]any{"invoice_id": "inv-1", "order_id": o.ID, "amount_cents": o.TotalCents}
	const paidSubj, blockedSubj = "billing.events.invoice.paid", "users.events.blocked"
	cases := []struct {
		name             string
		subj, typ, actor string
		userID           string
		data             any
		hdr              nats.Header
		reason           string // of the dead letter
	}{
		{"invoice.paid with the owner's access token", paidSubj, "invoice.paid", o.UserID, o.UserID, paid,
			nats.Header{natsauth.HeaderAuthorization: {bearer(alice)}}, "invalid_token: access_token_on_nats"},
		{"invoice.paid with billing-service's access token", paidSubj, "invoice.paid", "billing-service@clients", o.UserID, paid,
			nats.Header{natsauth.HeaderAuthorization: {bearer(s.clientToken("billing-service"))}}, "invalid_token: access_token_on_nats"},
		{"invoice.paid with an access token beside a valid transaction token", paidSubj, "invoice.paid", o.UserID, o.UserID, paid,
			nats.Header{natsauth.HeaderAuthorization: {bearer(alice)}, natsauth.HeaderTxnToken: {payTxn}}, "invalid_token: access_token_on_nats"},
		{"invoice.paid with the owner's access token as Txn-Token", paidSubj, "invoice.paid", o.UserID, o.UserID, paid,
			nats.Header{natsauth.HeaderTxnToken: {alice}}, "invalid_token"},
		{"invoice.paid with the owner's transaction token for another hop", paidSubj, "invoice.paid", o.UserID, o.UserID, paid,
			nats.Header{natsauth.HeaderTxnToken: {s.users.txnOf(o.UserID)}}, "not_authorized: wrong_hop_scope"},
		{"user.blocked with an admin's access token", blockedSubj, "user.blocked", co.UserID, o.UserID, map[string]string{"user_id": o.UserID},
			nats.Header{natsauth.HeaderAuthorization: {bearer(carol)}}, "invalid_token: access_token_on_nats"},
		{"user.blocked with an admin's transaction token for another hop", blockedSubj, "user.blocked", co.UserID, co.UserID, map[string]string{"user_id": co.UserID},
			nats.Header{natsauth.HeaderTxnToken: {s.users.txnOf(co.UserID)}}, "not_authorized: wrong_hop_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.hdr.Get(natsauth.HeaderTxnToken) == "" && c.hdr.Get(natsauth.HeaderAuthorization) == "" {
				t.Fatal("no token to send: the case proves nothing")
			}
			s.publishRaw(c.hdr, c.subj, c.typ, c.actor, "inv-1", c.userID, c.data)
			m, err := dlq.Next()
			if err != nil {
				t.Fatalf("not dead-lettered: %v", err)
			}
			if got := m.Header.Get(natsauth.HeaderDLQReason); !strings.HasPrefix(got, c.reason) || envelopeOf(t, m).Type != c.typ {
				t.Fatalf("dead letter %s, reason %q, want %s", m.Data, got, c.reason)
			}
			// Dead letters are kept for operators: no credential in them.
			for _, h := range []string{natsauth.HeaderAuthorization, natsauth.HeaderTxnToken} {
				if _, ok := m.Header[h]; ok {
					t.Fatalf("dead letter keeps %s", h)
				}
			}
			for _, id := range []string{o.ID, co.ID} {
				if st := s.order(id).Status; st != "pending" {
					t.Fatalf("order %s became %s", id, st)
				}
			}
		})
	}
	// The owner's payment, as billing publishes it, does move the order: the
	// refusals above were not an order that cannot move.
	s.publishAs(alice, paidSubj, "invoice.paid", "inv-1", o.UserID, paid)
	s.eventually("order paid", 10*time.Second, func() bool { return s.order(o.ID).Status == "paid" })
}
