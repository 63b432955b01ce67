package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
	"github.com/authmesh/authmesh/services/orders/internal/adapters"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/natstest"
	"github.com/authmesh/authmesh/services/orders/internal/service"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

const audience = "https://api.authmesh.dev"

// stack is NATS, devtenant, fake users/billing responders and the orders
// service, all in-process.
type stack struct {
	t       *testing.T
	nats    *natstest.Server
	tenant  *tenant.Server
	base    string // orders HTTP base URL
	billing *fakeBilling
	users   *fakeUsers
	app     *platform.App
}

// fakeUsers answers authmesh.users.profile for the caller named by the token.
type fakeUsers struct {
	mu     sync.Mutex
	tokens int // requests that carried a bearer token
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

// unverifiedSub reads the sub of a token the fakes received (the real users
// and billing services verify it; the lead's cross-service tests cover that).
func unverifiedSub(h nats.Header) string {
	tok := strings.TrimPrefix(h.Get(natsauth.HeaderAuthorization), "Bearer ")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct{ Sub string }
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

func startFakes(t *testing.T, nc *nats.Conn) (*fakeUsers, *fakeBilling) {
	t.Helper()
	fu := &fakeUsers{}
	fb := &fakeBilling{paid: map[string]bool{}, voided: map[string]string{}}
	us, err := micro.AddService(nc, micro.Config{Name: "users", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: adapters.ProfileSubject, Handler: micro.HandlerFunc(func(r micro.Request) {
			sub := unverifiedSub(nats.Header(r.Headers()))
			if sub == "" {
				_ = r.Error("401", "missing_token", nil)
				return
			}
			fu.mu.Lock()
			fu.tokens++
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
	bs, err := micro.AddService(nc, micro.Config{Name: "billing", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: adapters.VoidSubject, Handler: micro.HandlerFunc(func(r micro.Request) {
			var req struct {
				OrderID string `json:"order_id"`
			}
			sub := unverifiedSub(nats.Header(r.Headers()))
			if json.Unmarshal(r.Data(), &req) != nil || req.OrderID == "" || sub == "" {
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

func (b *fakeBilling) setPaid(id string) { b.mu.Lock(); b.paid[id] = true; b.mu.Unlock() }
func (b *fakeBilling) voidedBy(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.voided[id]
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ns := natstest.Start(t)
	// The streams other services own; orders' consumers wait for them.
	for _, s := range []jetstream.StreamConfig{
		{Name: "BILLING_EVENTS", Subjects: []string{"billing.events.>"}},
		{Name: "USERS_EVENTS", Subjects: []string{"users.events.>"}},
	} {
		if _, err := ns.JS.CreateOrUpdateStream(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	// The revocation bucket is the users service's; every validator watches it.
	if _, err := natsauth.NewRevocationStore(context.Background(), ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	// devtenant's issuer is its own URL here: the listener comes first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String() + "/"
	ten, err := tenant.New(tenant.Config{Issuer: issuer, TenantFile: "../../../../deploy/tenant.yaml",
		DevDir: "../../../../deploy/dev", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(ten.Handler())
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = ten.Close() })

	users, billing := startFakes(t, natstest.Connect(t, ns.Server))

	cfg, err := platform.LoadConfig(service.Name, func(k string) string {
		return map[string]string{"AUTH0_ISSUER": issuer, "ORDERS_NATS_URL": ns.ClientURL(), "ORDERS_LOG_LEVEL": "error", "AUTH0_TENANT_FILE": "../../../../deploy/tenant.yaml"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &stack{t: t, nats: ns, tenant: ten, base: "http://" + hl.Addr().String(), users: users, billing: billing}
	done := make(chan error, 1)
	go func() {
		done <- service.RunWith(ctx, cfg,
			platform.Options{Listener: hl, Logger: slog.New(slog.DiscardHandler)},
			service.Tuning{RelayEvery: 100 * time.Millisecond, RelayGrace: 200 * time.Millisecond, MetricsEvery: 100 * time.Millisecond,
				BeforeRun: func(a *platform.App, _ *app.Service) { st.app = a }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("service did not stop")
		}
	})
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(st.base + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			last = string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func (s *stack) token(email string) string {
	s.t.Helper()
	tok, err := s.tenant.IssueUserToken(email, audience, "")
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

func (s *stack) clientToken(client string) string {
	s.t.Helper()
	tok, err := s.tenant.IssueClientToken(client, audience)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (s *stack) do(method, path, token, body string, hdr ...string) resp {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
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
	if r.status != http.StatusCreated {
		s.t.Fatalf("create: %d %s", r.status, r.body)
	}
	var o orderOut
	r.json(s.t, &o)
	return o
}

func (s *stack) order(id string) orderOut {
	s.t.Helper()
	r := s.do(http.MethodGet, "/v1/orders/"+id, s.token("carol@authmesh.dev"), "")
	if r.status != http.StatusOK {
		s.t.Fatalf("get %s: %d %s", id, r.status, r.body)
	}
	var o orderOut
	r.json(s.t, &o)
	return o
}

// events reads every message on a subject filter of ORDERS_EVENTS.
func (s *stack) events(filter string) []jetstream.Msg {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := s.nats.JS.OrderedConsumer(ctx, adapters.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	n := int(info.NumPending)
	var out []jetstream.Msg
	if n == 0 {
		return nil
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		s.t.Fatal(err)
	}
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

func envelopeOf(t *testing.T, m jetstream.Msg) natsauth.Envelope {
	t.Helper()
	e, err := natsauth.DecodeEnvelope(m.Data())
	if err != nil {
		t.Fatal(err)
	}
	return *e
}

// publishAs publishes an event on another service's stream with a token, the
// way that service would.
func (s *stack) publishAs(token, subj, typ, entityID, userID string, data any) {
	s.t.Helper()
	ctx := authz.WithClaims(context.Background(), &authz.Claims{}, token)
	if _, err := natsauth.PublishEvent(ctx, s.nats.JS, subj, typ, entityID, userID, data); err != nil {
		s.t.Fatal(err)
	}
}

const mugs = `{"items":[{"sku":"mug","quantity":2},{"sku":"tea-green","quantity":1}]}`

func TestCatalogIsPublic(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.do(http.MethodGet, "/v1/catalog", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var got []map[string]any
	r.json(t, &got)
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
	if created.status != http.StatusCreated {
		t.Fatalf("create: %d %s", created.status, created.body)
	}
	var ao orderOut
	created.json(t, &ao)
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
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want >= 400 {
				var e struct {
					Error   string            `json:"error"`
					Message string            `json:"message"`
					Fields  map[string]string `json:"fields"`
				}
				r.json(t, &e)
				if e.Message == "" || (tc.wantErr != "" && e.Error != tc.wantErr) {
					t.Fatalf("error body %s", r.body)
				}
				if tc.wantField != "" && e.Fields[tc.wantField] == "" {
					t.Fatalf("no message for %s in %s", tc.wantField, r.body)
				}
				if tc.token != "" && strings.Contains(string(r.body), tc.token[:40]) {
					t.Fatal("token echoed in the error body")
				}
			}
			if tc.wantChallenge != "" && !strings.Contains(r.header.Get("WWW-Authenticate"), tc.wantChallenge) {
				t.Fatalf("WWW-Authenticate %q lacks %q", r.header.Get("WWW-Authenticate"), tc.wantChallenge)
			}
		})
	}

	t.Run("list own only", func(t *testing.T) {
		var got []orderOut
		s.do("GET", "/v1/orders", alice, "").json(t, &got)
		if len(got) != 1 || got[0].ID != ao.ID {
			t.Fatalf("alice sees %+v", got)
		}
	})
	t.Run("list another user's with read:all-orders", func(t *testing.T) {
		var got []orderOut
		r := s.do("GET", "/v1/orders?user_id="+bobOrder.UserID, dave, "")
		r.json(t, &got)
		if r.status != 200 || len(got) != 1 || got[0].ID != bobOrder.ID {
			t.Fatalf("dave sees %d %+v", r.status, got)
		}
	})
	t.Run("cancel own pending, then again", func(t *testing.T) {
		r := s.do("POST", "/v1/orders/"+ao.ID+"/cancel", alice, "")
		var o orderOut
		r.json(t, &o)
		if r.status != 200 || o.Status != "cancelled" {
			t.Fatalf("cancel: %d %s", r.status, r.body)
		}
		if by := s.billing.voidedBy(ao.ID); by != ao.UserID {
			t.Fatalf("billing void asked by %q, want the caller %q", by, ao.UserID)
		}
		if r := s.do("POST", "/v1/orders/"+ao.ID+"/cancel", alice, ""); r.status != 409 {
			t.Fatalf("second cancel: %d %s", r.status, r.body)
		}
	})
	t.Run("cancel refused by billing because paid", func(t *testing.T) {
		o := s.placeOrder(alice, mugs)
		s.billing.setPaid(o.ID)
		if r := s.do("POST", "/v1/orders/"+o.ID+"/cancel", alice, ""); r.status != 409 {
			t.Fatalf("cancel of a paid invoice's order: %d %s", r.status, r.body)
		}
		if got := s.order(o.ID); got.Status != "pending" {
			t.Fatalf("order became %s", got.Status)
		}
	})
	t.Run("events carry the caller's token and a de-duplication id", func(t *testing.T) {
		var found bool
		for _, m := range s.events(adapters.SubjectCreated) {
			e := envelopeOf(t, m)
			if e.UserID != ao.UserID || !strings.Contains(string(e.Data), ao.ID) {
				continue
			}
			found = true
			if e.Type != "order.created" || e.Actor != ao.UserID || m.Headers().Get(natsauth.HeaderMsgID) != "order.created:"+ao.ID ||
				m.Headers().Get(natsauth.HeaderAuthorization) != "Bearer "+alice {
				t.Fatalf("event %+v headers %v", e, m.Headers())
			}
		}
		if !found {
			t.Fatal("no order.created event for alice's order")
		}
		cancelled := s.events(adapters.SubjectCancelled)
		if len(cancelled) != 1 || envelopeOf(t, cancelled[0]).Actor != ao.UserID {
			t.Fatalf("cancelled events: %d", len(cancelled))
		}
	})
	t.Run("metrics", func(t *testing.T) {
		r := s.do("GET", "/metrics", "", "")
		for _, name := range []string{"orders_outbox_pending", "orders_consumer_pending_messages"} {
			if !strings.Contains(string(r.body), name) {
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
	first.json(t, &o1)
	if first.status != 201 {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	// Same body with other formatting is the same request.
	again := s.do("POST", "/v1/orders", alice, " {\"items\": [{\"quantity\":2, \"sku\":\"mug\"},{\"sku\":\"tea-green\",\"quantity\":1}]}", "Idempotency-Key", "k-1")
	var o2 orderOut
	again.json(t, &o2)
	if again.status != 201 || o2.ID != o1.ID || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", again.status, again.body)
	}
	if r := s.do("POST", "/v1/orders", alice, `{"items":[{"sku":"mug","quantity":3}]}`, "Idempotency-Key", "k-1"); r.status != 409 {
		t.Fatalf("different body: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/orders", bob, mugs, "Idempotency-Key", "k-1"); r.status != 201 {
		t.Fatalf("bob's own key: %d %s", r.status, r.body)
	}
	if r := s.do("POST", "/v1/orders", alice, mugs, "Idempotency-Key", strings.Repeat("k", 300)); r.status != 422 {
		t.Fatalf("overlong key: %d %s", r.status, r.body)
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
	s.do("GET", "/v1/orders", alice, "").json(t, &list)
	if len(list) != 2 {
		t.Fatalf("alice has %d orders, want 2 (k-1 and k-concurrent)", len(list))
	}
}

func TestOutboxReplaysAfterPublishFailure(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	alice := s.token("alice@authmesh.dev")
	ctx := context.Background()
	// Publishing fails while the stream is gone (no responders for its subject).
	if err := s.nats.JS.DeleteStream(ctx, adapters.EventsStream); err != nil {
		t.Fatal(err)
	}
	o := s.placeOrder(alice, mugs)
	if err := adapters.EnsureStreams(ctx, s.nats.JS, 1); err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	s.eventually("the relayed order.created", 10*time.Second, func() bool {
		msgs = s.events(adapters.SubjectCreated)
		return len(msgs) > 0
	})
	if len(msgs) != 1 {
		t.Fatalf("%d created events", len(msgs))
	}
	e := envelopeOf(t, msgs[0])
	if e.Actor != "orders-service@clients" || e.UserID != o.UserID || !strings.Contains(string(e.Data), o.ID) ||
		msgs[0].Headers().Get(natsauth.HeaderMsgID) != "order.created:"+o.ID {
		t.Fatalf("relayed event %+v", e)
	}
	// The relayed token is the service's: it verifies, and names its client.
	tok := strings.TrimPrefix(msgs[0].Headers().Get(natsauth.HeaderAuthorization), "Bearer ")
	cl, err := s.app.Validator.Validate(ctx, tok)
	if err != nil || cl.AZP != "orders-service" || !cl.IsM2M() {
		t.Fatalf("relayed token: %+v %v", cl, err)
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

	// A customer cannot block anyone: bob's event about alice is dead-lettered.
	s.publishAs(bob, "users.events.blocked", "user.blocked", "forged-"+p1.UserID, p1.UserID, map[string]string{"user_id": p1.UserID, "at": time.Now().UTC().Format(time.RFC3339)})
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
		st, err := s.nats.JS.Stream(context.Background(), adapters.DLQStream)
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
	bob := unverifiedSub(nats.Header{natsauth.HeaderAuthorization: []string{"Bearer " + tok}})
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
		{"orders forwarded no token (our bug, not the caller's)", "401", "missing_token: a bearer token is required", 503, "unavailable", "", ""},
		{"users failed", "500", "internal error", 503, "unavailable", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.users.failFor(bob, tc.code, tc.desc)
			r := s.do(http.MethodPost, "/v1/orders", tok, mugs)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			var e struct{ Error, Message string }
			r.json(t, &e)
			if e.Error != tc.wantErr || e.Message == "" {
				t.Fatalf("body %s, want error %q", r.body, tc.wantErr)
			}
			if tc.wantHeader != "" && !strings.Contains(r.header.Get(tc.wantHeader), tc.wantValue) {
				t.Fatalf("%s %q lacks %q", tc.wantHeader, r.header.Get(tc.wantHeader), tc.wantValue)
			}
			if tc.want != 401 && tc.want != 403 && r.header.Get("WWW-Authenticate") != "" {
				t.Fatalf("WWW-Authenticate %q on a %d", r.header.Get("WWW-Authenticate"), tc.want)
			}
		})
	}
}
