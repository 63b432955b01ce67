package natsauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

type eventRig struct {
	*testMesh
	nc      *nats.Conn
	js      jetstream.JetStream
	metrics *Metrics
	reg     *prometheus.Registry

	mu      sync.Mutex
	handled map[string]*Event // by NATS subject
	tokens  map[string]string // the transaction token each handler ctx held, by NATS subject
	dead    map[string]*nats.Msg
}

func newEventRig(t *testing.T, vopts ...authz.Option) *eventRig {
	t.Helper()
	r := &eventRig{testMesh: newMesh(t, vopts...), handled: map[string]*Event{}, tokens: map[string]string{}, dead: map[string]*nats.Msg{}}
	r.nc, r.js = connect(t, startNATS(t))
	r.reg = prometheus.NewRegistry()
	var err error
	if r.metrics, err = NewMetrics(r.reg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS_EVENTS", Subjects: []string{"orders.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDeadLetterStream(ctx, r.js, "BILLING_DLQ", "dlq.billing", 1); err != nil {
		t.Fatal(err)
	}
	sub, err := r.nc.Subscribe("dlq.billing.>", func(m *nats.Msg) {
		r.mu.Lock()
		r.dead[m.Header.Get(HeaderDLQSubject)] = m
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *eventRig) run(t *testing.T, cfg ConsumerConfig, h EventHandler) *Consumer {
	t.Helper()
	cfg.Stream, cfg.DeadLetterPrefix, cfg.Metrics = "ORDERS_EVENTS", "dlq.billing", r.metrics
	if !cfg.Policy.Declared() {
		cfg.Policy = authz.Authenticated().Users().Clients("users-service", "billing-service")
	}
	if cfg.Durable == "" {
		cfg.Durable = "billing-orders"
	}
	if h == nil {
		h = func(ctx context.Context, ev *Event) error {
			if c, ok := authz.ClaimsFromContext(ctx); !ok || c.Subject != ev.Actor || !c.IsTxn() {
				t.Errorf("handler ctx lacks the verified claims")
			}
			tok, _ := authz.TokenFromContext(ctx)
			r.mu.Lock()
			r.handled[ev.Subject] = ev
			r.tokens[ev.Subject] = tok
			r.mu.Unlock()
			return nil
		}
	}
	c, err := NewConsumer(r.js, r.txn, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	authztest.Eventually(t, 5*time.Second, func() bool { return c.Ready() == nil }, "consumer ready")
	return c
}

func (r *eventRig) outcome(subj string) (*Event, *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled[subj], r.dead[subj]
}

func envelope(t *testing.T, actor, user string) []byte {
	t.Helper()
	b, err := json.Marshal(Envelope{ID: newUUID(), Type: "order.created", Actor: actor, UserID: user,
		OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{"order_id":"o1","total_cents":100,"currency":"EUR","items":[]}`)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publishRaw publishes data with exactly the headers hdr (plus a
// Nats-Msg-Id), bypassing natsauth's publishing side.
func publishRaw(t *testing.T, js jetstream.JetStream, subj string, hdr nats.Header, data []byte) {
	t.Helper()
	msg := nats.NewMsg(subj)
	msg.Data = data
	for k, v := range hdr {
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderMsgID, subj)
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// bound returns the claims that bind a transaction token to data published
// on subj, as the Transaction Token Service writes them.
func bound(subj string, data []byte) authztest.Claims {
	b := authz.NewEventBinding(subj, data)
	return authztest.Claims{"tctx": authz.TxnContext{Event: &b}}
}

// publishBound publishes data on subj with a user's transaction token bound
// to it, bypassing natsauth's publishing side.
func publishBound(t *testing.T, r *eventRig, subj string, data []byte) {
	t.Helper()
	publishRaw(t, r.js, subj, header(HeaderTxnToken, r.userTxn(t, "create:orders", bound(subj, data))), data)
}

// TestConsumerVerifiesEvents publishes one event per case and checks each is
// either handled or dead-lettered with its reason, never both, never neither.
func TestConsumerVerifiesEvents(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	other := "auth0|someone-else"
	access := r.tenant.Token(t, authztest.Claims{"permissions": []string{"create:orders"}})
	// Each case's token is bound to its own message (b), as the service
	// binds every event's token, unless the case is about the binding.
	type token func(b authztest.Claims) string
	user := func(over authztest.Claims) token {
		return func(b authztest.Claims) string { return r.userTxn(t, "create:orders", b.With(over)) }
	}
	service := func(client string) token {
		return func(b authztest.Claims) string {
			return r.tts.Token(t, client+"@clients", "cancel:orders", b.With(authztest.Claims{"req_wl": client}))
		}
	}
	txn := func(tok token) func(authztest.Claims) nats.Header {
		return func(b authztest.Claims) nats.Header { return header(HeaderTxnToken, tok(b)) }
	}
	fixed := func(h nats.Header) func(authztest.Claims) nats.Header {
		return func(authztest.Claims) nats.Header { return h }
	}
	withAccess := func(b authztest.Claims) nats.Header {
		return header(HeaderTxnToken, user(nil)(b), HeaderAuthorization, "Bearer "+access)
	}
	twice := func(b authztest.Claims) nats.Header {
		tok := user(nil)(b)
		return header(HeaderTxnToken, tok, HeaderTxnToken, tok)
	}
	unbound := func(authztest.Claims) nats.Header { return header(HeaderTxnToken, r.userTxn(t, "create:orders", nil)) }
	otherPayload := func(authztest.Claims) nats.Header {
		return header(HeaderTxnToken, r.userTxn(t, "create:orders", bound("orders.events.casea", envelope(t, userSub, userSub))))
	}

	cases := []struct {
		name       string
		hdr        func(b authztest.Claims) nats.Header
		data       []byte
		wantReason string // "" = handled
	}{
		{"own event", txn(user(nil)), envelope(t, userSub, userSub), ""},
		{"m2m on behalf, allowed client", txn(service("users-service")), envelope(t, "users-service@clients", other), ""},
		{"missing token", fixed(nil), envelope(t, userSub, userSub), "missing_token"},
		{"access token in Authorization", fixed(header(HeaderAuthorization, "Bearer "+access)), envelope(t, userSub, userSub), "invalid_token: access_token_on_nats"},
		{"access token beside a valid Txn-Token", withAccess, envelope(t, userSub, userSub), "invalid_token: access_token_on_nats"},
		{"two Txn-Token values", twice, envelope(t, userSub, userSub), "invalid_token: malformed_header"},
		{"token bound to no event", unbound, envelope(t, userSub, userSub), "event_unbound"},
		{"token bound to another event", otherPayload, envelope(t, userSub, userSub), "event_mismatch"},
		{"payload actor is not sub", txn(user(nil)), envelope(t, other, other), "actor_mismatch"},
		{"payload user is not actor", txn(user(nil)), envelope(t, userSub, other), "on_behalf_denied"},
		{"m2m on behalf, other client", txn(service("billing-service")), envelope(t, "billing-service@clients", other), "on_behalf_denied"},
		{"undecodable payload", txn(user(nil)), []byte(`{"id":`), "bad_payload"},
		{"envelope without actor", txn(user(nil)), []byte(`{"id":"1","type":"order.created","user_id":"x","occurred_at":"2026-01-01T00:00:00Z","data":{}}`), "bad_payload"},
	}
	subj := func(i int) string { return "orders.events.case" + string(rune('a'+i)) }
	for i, tc := range cases {
		publishRaw(t, r.js, subj(i), tc.hdr(bound(subj(i), tc.data)), tc.data)
	}
	r.run(t, ConsumerConfig{OnBehalfPolicy: authz.RequireAll("cancel:orders").Clients("users-service")}, nil)

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ev *Event
			var dead *nats.Msg
			authztest.Eventually(t, 5*time.Second, func() bool { ev, dead = r.outcome(subj(i)); return ev != nil || dead != nil }, "an outcome")
			time.Sleep(20 * time.Millisecond)
			ev, dead = r.outcome(subj(i))
			switch {
			case ev != nil && dead != nil:
				t.Fatal("both handled and dead-lettered")
			case tc.wantReason == "" && ev == nil:
				t.Fatalf("dead-lettered: %s", dead.Header.Get(HeaderDLQReason))
			case tc.wantReason != "" && dead == nil:
				t.Fatalf("handled, want dead letter %q", tc.wantReason)
			case dead != nil:
				reason := dead.Header.Get(HeaderDLQReason)
				if !strings.HasPrefix(reason, tc.wantReason) {
					t.Fatalf("reason %q, want %q", reason, tc.wantReason)
				}
				for _, h := range []string{HeaderTxnToken, HeaderAuthorization} {
					if _, ok := dead.Header[h]; ok {
						t.Fatalf("dead letter keeps the %s header", h)
					}
				}
				if string(dead.Data) != string(tc.data) {
					t.Fatal("dead letter lost the payload")
				}
			}
		})
	}
	if got := testutil.ToFloat64(r.metrics.events.WithLabelValues("billing-orders", "rejected", "actor_mismatch")); got != 1 {
		t.Errorf("actor_mismatch counted %v times", got)
	}
	if got := testutil.ToFloat64(r.metrics.deadLettered.WithLabelValues("billing-orders", "invalid_token")); got != 3 {
		t.Errorf("invalid_token dead letters counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.metrics.events.WithLabelValues("billing-orders", "rejected", "invalid_token")); got != 3 {
		t.Errorf("invalid_token rejections counted %v, want 3", got)
	}
	for _, label := range []string{"event_unbound", "event_mismatch"} {
		if got := testutil.ToFloat64(r.metrics.deadLettered.WithLabelValues("billing-orders", label)); got != 1 {
			t.Errorf("%s dead letters counted %v, want 1", label, got)
		}
	}
	if got := testutil.ToFloat64(r.metrics.events.WithLabelValues("billing-orders", "accepted", "ok")); got != 2 {
		t.Errorf("accepted counted %v, want 2", got)
	}
	// The DLQ stream kept them (operators read it later).
	info, err := r.js.Stream(context.Background(), "BILLING_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if n, want := info.CachedInfo().State.Msgs, uint64(len(cases)-2); n != want {
		t.Errorf("DLQ stream holds %d messages, want %d", n, want)
	}
}

// TestDeadLetterDropsPublishDirectives: a publisher that wants its forged
// event kept out of the dead-letter stream adds JetStream publish
// directives that hold where it publishes and not at the DLQ
// (Nats-Expected-Stream names the events stream; Nats-Expected-Last-Sequence
// the events stream's sequence). Copied, they would make the DLQ refuse the
// dead letter, and the event would be retried until the server gave up,
// leaving no trace. The dead letters are in the stream itself (not only
// seen in flight), with the reason and without the directives.
func TestDeadLetterDropsPublishDirectives(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	ctx := context.Background()
	events, err := r.js.Stream(ctx, "ORDERS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string]nats.Header{
		"orders.events.expected-stream":   {"Nats-Expected-Stream": {"ORDERS_EVENTS"}},
		"orders.events.expected-sequence": {"Nats-Expected-Last-Sequence": {strconv.FormatUint(info.State.LastSeq+1, 10)}},
	}
	// In order: the second directive names the sequence the first leaves.
	for _, subj := range []string{"orders.events.expected-stream", "orders.events.expected-sequence"} {
		publishRaw(t, r.js, subj, directives[subj], envelope(t, userSub, userSub)) // no token: dead-lettered
	}
	r.run(t, ConsumerConfig{}, nil)
	dlq, err := r.js.Stream(ctx, "BILLING_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for subj, hdr := range directives {
		var stored *jetstream.RawStreamMsg
		authztest.Eventually(t, 10*time.Second, func() bool {
			stored, err = dlq.GetLastMsgForSubject(ctx, "dlq.billing."+subj)
			return err == nil
		}, subj+" in the dead-letter stream")
		if reason := stored.Header.Get(HeaderDLQReason); !strings.HasPrefix(reason, "missing_token") {
			t.Errorf("%s: reason %q", subj, reason)
		}
		for k := range hdr {
			if v := stored.Header.Values(k); len(v) != 0 {
				t.Errorf("%s: the dead letter kept %s: %q", subj, k, v)
			}
		}
	}
}

// TestConsumerAcceptsEventWhoseTokenExpiredBeforeConsume: a backlog consumed
// after the transaction token's exp is still accepted, because the token is
// checked as of the stored time; the same token is refused by Validate now,
// and an event stored after its exp is refused.
func TestConsumerAcceptsEventWhoseTokenExpiredBeforeConsume(t *testing.T) {
	t.Parallel()
	r := newEventRig(t, authz.WithLeeway(0))
	short := func(subj string, data []byte) string {
		return r.userTxn(t, "create:orders", bound(subj, data).With(authztest.Claims{"iat": time.Now().Add(-time.Minute).Unix(), "exp": time.Now().Add(2 * time.Second).Unix()}))
	}
	data := envelope(t, userSub, userSub)
	tok := short("orders.events.created", data)
	publishRaw(t, r.js, "orders.events.created", header(HeaderTxnToken, tok), data)
	late := envelope(t, userSub, userSub)
	lateTok := short("orders.events.late", late)
	authztest.Eventually(t, 10*time.Second, func() bool {
		_, err := r.txn.Validate(context.Background(), tok)
		return authz.CodeOf(err) == authz.CodeInvalidToken
	}, "token expired")
	// Published now: stored after its exp, refused.
	publishRaw(t, r.js, "orders.events.late", header(HeaderTxnToken, lateTok), late)

	r.run(t, ConsumerConfig{}, nil)
	var ev *Event
	authztest.Eventually(t, 5*time.Second, func() bool { ev, _ = r.outcome("orders.events.created"); return ev != nil }, "event handled")
	if ev.Actor != userSub || ev.Claims.Subject != userSub || ev.Type != "order.created" || ev.ID == "" {
		t.Fatalf("event %+v", ev.Envelope)
	}
	if !ev.Claims.ExpiresAt.Before(time.Now()) || ev.StoredAt.After(ev.Claims.ExpiresAt) {
		t.Fatalf("stored %v, exp %v", ev.StoredAt, ev.Claims.ExpiresAt)
	}
	var dead *nats.Msg
	authztest.Eventually(t, 5*time.Second, func() bool { _, dead = r.outcome("orders.events.late"); return dead != nil }, "late event dead-lettered")
	if reason := dead.Header.Get(HeaderDLQReason); !strings.HasPrefix(reason, "invalid_token") {
		t.Fatalf("late event: reason %q", reason)
	}
}

// TestConsumerTransactionFlow: an event published from an HTTP handler
// carries a transaction token exchanged for the caller's access token (never
// the access token); its handler gets that token, and whatever the handler
// sends forwards it unmodified, without a new exchange.
func TestConsumerTransactionFlow(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	access := r.tenant.Token(t, authztest.Claims{"permissions": []string{"create:orders", "read:profile"}})
	ctx := userCtx(t, r.access, r.ex, access, hops(map[string][]string{"orders.events.created": {"create:orders", "cancel:orders"}}))
	if _, err := PublishEvent(ctx, r.js, "orders.events.created", "order.created", "o-1", userSub, map[string]any{"order_id": "o-1"}); err != nil {
		t.Fatal(err)
	}
	calls := r.ex.calls()
	if len(calls) != 1 || calls[0].subjectToken != access {
		t.Fatalf("exchanges %+v", calls)
	}
	stream, err := r.js.Stream(context.Background(), "ORDERS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	sent := stored.Header.Get(HeaderTxnToken)
	if sent == "" || sent == access || stored.Header.Get(HeaderAuthorization) != "" {
		t.Fatal("the stored event does not carry a transaction token, or carries the access token")
	}

	forwarded := make(chan string, 1)
	r.run(t, ConsumerConfig{}, func(ctx context.Context, ev *Event) error {
		// Only what the caller held and the hop allows was granted.
		if !ev.Claims.HasScope("create:orders") || ev.Claims.HasScope("cancel:orders") || ev.Claims.HasScope("read:profile") ||
			ev.Claims.RequestingWorkload != "orders-service" || ev.Actor != userSub {
			t.Errorf("claims %+v", ev.Claims)
		}
		msg, err := NewMsg(ctx, "authmesh.users.profile", nil)
		if err != nil {
			return err
		}
		forwarded <- msg.Header.Get(HeaderTxnToken)
		return nil
	})
	if got := authztest.Receive(t, forwarded, 5*time.Second, "the event handled"); got != sent {
		t.Fatal("the handler's message does not carry the event's transaction token unmodified")
	}
	if n := len(r.ex.calls()); n != 1 {
		t.Fatalf("%d exchanges, want the publisher's only", n)
	}
}

func TestConsumerRejectsTooOldBacklog(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	publishBound(t, r, "orders.events.old", envelope(t, userSub, userSub))
	time.Sleep(1100 * time.Millisecond)
	r.run(t, ConsumerConfig{MaxBacklogAge: time.Second}, nil)
	var dead *nats.Msg
	authztest.Eventually(t, 5*time.Second, func() bool { _, dead = r.outcome("orders.events.old"); return dead != nil }, "dead letter")
	if reason := dead.Header.Get(HeaderDLQReason); !strings.HasPrefix(reason, "backlog_too_old") {
		t.Fatalf("reason %q", reason)
	}
	if ev, _ := r.outcome("orders.events.old"); ev != nil {
		t.Fatal("handled")
	}
}

// TestConsumerRedeliveryBounded: a failing handler runs exactly MaxDeliver
// times, with backoff, then the event is dead-lettered and not seen again.
func TestConsumerRedeliveryBounded(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	var calls atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	var logs authztest.LogBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	r.run(t, ConsumerConfig{MaxDeliver: 3, BackOff: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, AckWait: 2 * time.Second, Logger: logger},
		func(ctx context.Context, ev *Event) error {
			calls.Add(1)
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			return errorString("database down")
		})
	publishBound(t, r, "orders.events.flaky", envelope(t, userSub, userSub))
	var dead *nats.Msg
	authztest.Eventually(t, 5*time.Second, func() bool { _, dead = r.outcome("orders.events.flaky"); return dead != nil }, "dead letter")
	if reason := dead.Header.Get(HeaderDLQReason); reason != "handler_error: database down" {
		t.Fatalf("reason %q", reason)
	}
	time.Sleep(500 * time.Millisecond)
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < 90*time.Millisecond {
		t.Fatalf("first retry after %v, want ≥ 100ms backoff", gap)
	}
	if gap := times[2].Sub(times[1]); gap < 190*time.Millisecond {
		t.Fatalf("second retry after %v, want ≥ 200ms backoff", gap)
	}
	if got := testutil.ToFloat64(r.metrics.events.WithLabelValues("billing-orders", "retried", "handler_error")); got != 2 {
		t.Errorf("retries counted %v", got)
	}
	out := logs.String()
	if n := strings.Count(out, `"result":"retried","reason":"handler_error: database down"`); n != 2 {
		t.Errorf("%d retry warnings, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, `"result":"dead_lettered","reason":"handler_error: database down"`); n != 1 {
		t.Errorf("%d dead-letter warnings, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `"subject":"orders.events.flaky"`) || strings.Contains(out, "eyJ") {
		t.Errorf("warnings lack the subject or carry a token:\n%s", out)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestNewConsumerValidatesConfig(t *testing.T) {
	t.Parallel()
	v := newTxnValidator(t, authztest.NewTxnIssuer(t))
	js := natstest.JetStream(t)
	h := func(context.Context, *Event) error { return nil }
	who := authz.Authenticated().Users()
	for name, cfg := range map[string]ConsumerConfig{
		"no stream":          {Durable: "d", DeadLetterPrefix: "dlq.x", Policy: who},
		"no policy":          {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x"},
		"policy without who": {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: authz.Authenticated()},
		"on-behalf policy without who": {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: who,
			OnBehalfPolicy: authz.RequireAll("cancel:orders")},
		"no dlq":         {Stream: "S", Durable: "d", Policy: who},
		"public policy":  {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: authz.Public()},
		"negative delay": {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: who, BackOff: []time.Duration{-1}},
		"no workers":     {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: who, Workers: -1},
		"short pull":     {Stream: "S", Durable: "d", DeadLetterPrefix: "dlq.x", Policy: who, PullExpiry: 500 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewConsumer(js, v, cfg, h); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestConsumerWorkers: with Workers > 1 events of different entities are
// handled at once, and the events of one entity in the order they were stored.
func TestConsumerWorkers(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	const entities, steps = 8, 3
	var (
		mu         sync.Mutex
		seen       = map[string][]int{}
		running    int
		maxRunning int
		total      atomic.Int32
	)
	r.run(t, ConsumerConfig{Workers: 4}, func(ctx context.Context, ev *Event) error {
		var d struct {
			Entity string `json:"entity"`
			Step   int    `json:"step"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		mu.Lock()
		running++
		maxRunning = max(maxRunning, running)
		seen[d.Entity] = append(seen[d.Entity], d.Step)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
		total.Add(1)
		return nil
	})
	for step := range steps {
		for e := range entities {
			entity := fmt.Sprintf("o%d", e)
			env, err := json.Marshal(Envelope{ID: newUUID(), Type: "order.step", Actor: userSub, UserID: userSub,
				OccurredAt: time.Now().UTC(), Data: json.RawMessage(fmt.Sprintf(`{"entity":%q,"step":%d}`, entity, step))})
			if err != nil {
				t.Fatal(err)
			}
			msg := nats.NewMsg("orders.events.step")
			msg.Data = env
			msg.Header.Set(HeaderTxnToken, r.userTxn(t, "create:orders", bound(msg.Subject, env)))
			msg.Header.Set(HeaderMsgID, fmt.Sprintf("order.step%d:%s", step, entity))
			if _, err := r.js.PublishMsg(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	authztest.Eventually(t, 10*time.Second, func() bool { return total.Load() == entities*steps }, "all events handled")
	mu.Lock()
	defer mu.Unlock()
	for entity, got := range seen {
		if !slices.Equal(got, []int{0, 1, 2}) {
			t.Errorf("%s handled in order %v", entity, got)
		}
	}
	if maxRunning < 2 || maxRunning > 4 {
		t.Errorf("at most %d events handled at once, want 2..4", maxRunning)
	}
}

// TestConsumerRequiresTheHopScope: with Scopes set (as the mesh sets it), an
// event's transaction token must hold one of its subject's scopes: a token
// narrowed for another hop — a captured profile read, say — carries no event.
func TestConsumerRequiresTheHopScope(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	hop := map[string][]string{"orders.events.created": {"create:orders", "cancel:orders"}}
	r.run(t, ConsumerConfig{Scopes: func(subj string) []string { return hop[subj] }}, nil)
	sub := r.tenant.DefaultClaims()["sub"].(string)
	data := envelope(t, sub, sub)
	profileRead := r.tts.Token(t, sub, "read:profile", bound("orders.events.created", data))
	publishRaw(t, r.js, "orders.events.created", nats.Header{HeaderTxnToken: {profileRead}}, data)
	other := envelope(t, sub, sub)
	publishRaw(t, r.js, "orders.events.other", nats.Header{HeaderTxnToken: {r.tts.Token(t, sub, "create:orders", bound("orders.events.other", other))}}, other)
	for _, subj := range []string{"orders.events.created", "orders.events.other"} {
		authztest.Eventually(t, 5*time.Second, func() bool { _, dead := r.outcome(subj); return dead != nil }, subj+" dead-lettered")
		ev, dead := r.outcome(subj)
		if ev != nil || !strings.Contains(dead.Header.Get(HeaderDLQReason), "wrong_hop_scope") {
			t.Fatalf("%s: handled %v, dead-letter reason %q", subj, ev != nil, dead.Header.Get(HeaderDLQReason))
		}
	}
	good := nats.NewMsg("orders.events.created")
	good.Data = envelope(t, sub, sub)
	good.Header.Set(HeaderTxnToken, r.tts.Token(t, sub, "create:orders", bound(good.Subject, good.Data)))
	good.Header.Set(HeaderMsgID, "order.created:o2")
	if _, err := r.js.PublishMsg(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	authztest.Eventually(t, 5*time.Second, func() bool { ev, _ := r.outcome("orders.events.created"); return ev != nil }, "the right hop's event handled")
}

// TestSealedEventPublishedLater: what an outbox does. The event is sealed
// while the caller's request is served, stored, and published later from a
// context with no identity at all; the consumer accepts it. Its token
// carries nothing else: not the same event changed by one byte, not the same
// bytes on another subject, not a request.
func TestSealedEventPublishedLater(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	access := r.tenant.Token(t, authztest.Claims{"permissions": []string{"create:orders", "read:profile"}})
	scopes := hops(map[string][]string{"orders.events.created": {"create:orders"}, "orders.events.other": {"create:orders"}})
	ctx := userCtx(t, r.access, r.ex, access, scopes)
	ev, err := SealEvent(ctx, "orders.events.created", "order.created:o-1", Envelope{Type: "order.created", UserID: userSub, Data: json.RawMessage(`{"order_id":"o-1","total_cents":100}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Usable(time.Now().Add(30*time.Minute)) || ev.Usable(time.Now().Add(2*time.Hour)) {
		t.Fatalf("expires %v: want about an hour from now (the test exchanger's)", ev.Expires)
	}
	stored, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var relayed SealedEvent
	if err := json.Unmarshal(stored, &relayed); err != nil {
		t.Fatal(err)
	}
	r.run(t, ConsumerConfig{}, nil)
	if _, err := relayed.Publish(context.Background(), r.js); err != nil {
		t.Fatal(err)
	}
	var got *Event
	authztest.Eventually(t, 5*time.Second, func() bool { got, _ = r.outcome("orders.events.created"); return got != nil }, "the relayed event handled")
	if got.Actor != userSub || got.UserID != userSub || got.Claims.Event == nil {
		t.Fatalf("handled %+v", got.Envelope)
	}

	// The relay's attacker: the stored token on a changed payload, and on
	// another subject.
	changed := bytes.Replace(ev.Payload, []byte(`"total_cents":100`), []byte(`"total_cents":1`), 1)
	publishRaw(t, r.js, "orders.events.other", header(HeaderTxnToken, ev.Token), ev.Payload)
	forged := *ev
	forged.Payload, forged.MsgID = changed, "order.created:o-1-forged"
	if _, err := forged.Publish(context.Background(), r.js); err != nil {
		t.Fatal(err)
	}
	authztest.Eventually(t, 5*time.Second, func() bool { _, dead := r.outcome("orders.events.other"); return dead != nil }, "the other subject's copy dead-lettered")
	if _, dead := r.outcome("orders.events.other"); dead.Header.Get(HeaderDLQReason) != "event_mismatch" {
		t.Fatalf("other subject: reason %q", dead.Header.Get(HeaderDLQReason))
	}
	authztest.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(r.metrics.deadLettered.WithLabelValues("billing-orders", "event_mismatch")) == 2
	}, "the changed payload dead-lettered")
	if n := testutil.ToFloat64(r.metrics.events.WithLabelValues("billing-orders", "accepted", "ok")); n != 1 {
		t.Fatalf("%v events accepted, want the sealed one only", n)
	}

	// Sealing needs the caller's own token or the service's: a handler of
	// a NATS message cannot turn the transaction token it got into events.
	if _, err := SealEvent(txnCtx(t, r.txn, r.userTxn(t, "create:orders", nil)), "orders.events.created", "order.created:o-2", Envelope{Type: "order.created", UserID: userSub}); err == nil {
		t.Fatal("sealed under a forwarded transaction token")
	}
}
