package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// recorded holds every span the package's tests end: TestMain installs an
// SDK whose only processor writes here, and each test picks its own spans
// out by the trace id of a root span it starts (startTestTrace).
var recorded = tracetest.NewInMemoryExporter()

func TestMain(m *testing.M) { os.Exit(authztest.RecordSpans(recorded, m.Run)) }

// startTestTrace starts the test's root span; it ends with the test.
func startTestTrace(t *testing.T) (context.Context, trace.TraceID) {
	t.Helper()
	ctx, span := otel.Tracer("test").Start(context.Background(), t.Name())
	t.Cleanup(func() { span.End() })
	return ctx, span.SpanContext().TraceID()
}

// withTraceparent is ctx under an incoming W3C trace context, as an HTTP
// request or a message from another process brings it.
func withTraceparent(ctx context.Context, traceparent, tracestate string) context.Context {
	return Propagator.Extract(ctx, propagation.MapCarrier{HeaderTraceparent: traceparent, HeaderTracestate: tracestate})
}

// spansOf waits until the trace has spans matching every name in want and
// returns all of its spans.
func spansOf(t *testing.T, id trace.TraceID, want ...string) tracetest.SpanStubs {
	t.Helper()
	var out tracetest.SpanStubs
	authztest.Eventually(t, 5*time.Second, func() bool {
		out = out[:0]
		for _, s := range recorded.GetSpans() {
			if s.SpanContext.TraceID() == id {
				out = append(out, s)
			}
		}
		for _, name := range want {
			if len(named(out, name)) == 0 {
				return false
			}
		}
		return true
	}, "spans "+strings.Join(want, ", "))
	return out
}

func named(spans tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	got := named(spans, name)
	if len(got) != 1 {
		t.Fatalf("%d spans named %q, want 1", len(got), name)
	}
	return got[0]
}

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, s tracetest.SpanStub, key string, want any) {
	t.Helper()
	v, ok := attr(s, key)
	if !ok || v.AsInterface() != want {
		t.Errorf("span %q: %s = %v (present %v), want %v", s.Name, key, v.AsInterface(), ok, want)
	}
}

func childOf(child, parent tracetest.SpanStub) bool {
	return child.Parent.SpanID() == parent.SpanContext.SpanID() && child.SpanContext.TraceID() == parent.SpanContext.TraceID()
}

func TestHeaderCarrier(t *testing.T) {
	t.Parallel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, key := range []string{"traceparent", "Traceparent", "TRACEPARENT", "TraceParent"} {
		h := nats.Header{key: {tp}, "tracestate": {"k=v"}}
		sc := trace.SpanContextFromContext(Propagator.Extract(context.Background(), HeaderCarrier(h)))
		if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" || !sc.IsRemote() || sc.TraceState().Get("k") != "v" {
			t.Errorf("%s: extracted %v", key, sc)
		}
	}
	// Written with the exact W3C names, replacing other casings.
	h := nats.Header{"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
	Propagator.Inject(withTraceparent(context.Background(), tp, "k=v"), HeaderCarrier(h))
	if len(h) != 2 || h.Get("traceparent") != tp || h.Get("tracestate") != "k=v" {
		t.Fatalf("injected %v", h)
	}
	// Invalid ones are ignored, as W3C requires.
	for _, bad := range []string{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "junk"} {
		ctx := ContextFromHeaders(context.Background(), nats.Header{"traceparent": {bad}})
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSpansRequestReply: a request is a client span, the endpoint's work a
// server span that is its child, with the decision and no token or subject.
// The trace comes in as a lower-case traceparent a non-Go client wrote.
func TestSpansRequestReply(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	svc := newTestService(t, nc, "users", m.txn)
	policy := authz.RequireAll("read:profile").Users()
	if err := svc.AddEndpoint("profile", "authmesh.users.trace", policy, func(ctx context.Context, req micro.Request) {
		_ = req.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	tok := m.userTxn(t, "read:profile", nil)

	t.Run("lower-case traceparent from another client", func(t *testing.T) {
		_, id := startTestTrace(t)
		msg := nats.NewMsg("authmesh.users.trace")
		parent := "00-" + id.String() + "-00f067aa0ba902b7-01"
		msg.Header["traceparent"] = []string{parent}
		msg.Header[HeaderTxnToken] = []string{tok}
		if _, err := nc.RequestMsg(msg, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		srv := one(t, spansOf(t, id, "process authmesh.users.trace"), "process authmesh.users.trace")
		if srv.Parent.SpanID().String() != "00f067aa0ba902b7" || !srv.Parent.IsRemote() || srv.SpanKind != trace.SpanKindServer {
			t.Fatalf("server span parent %v kind %v", srv.Parent, srv.SpanKind)
		}
	})

	t.Run("client and server spans", func(t *testing.T) {
		ctx, id := startTestTrace(t)
		ctx = authz.WithClaims(ctx, &authz.Claims{Txn: "t", Subject: userSub}, tok)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := Request(ctx, nc, "authmesh.users.trace", nil); err != nil {
			t.Fatal(err)
		}
		spans := spansOf(t, id, "request authmesh.users.trace", "process authmesh.users.trace")
		cli, srv := one(t, spans, "request authmesh.users.trace"), one(t, spans, "process authmesh.users.trace")
		if cli.SpanKind != trace.SpanKindClient || !childOf(srv, cli) {
			t.Fatalf("client %v, server parent %v", cli.SpanKind, srv.Parent)
		}
		wantAttr(t, srv, "authz.decision", "allowed")
		wantAttr(t, srv, "authz.policy", strings.Join(policy.Names(), " "))
		wantAttr(t, srv, "authz.sub_hash", authz.SubjectHash(userSub))
		wantAttr(t, srv, "authz.key_cache_hit", true)
		wantAttr(t, srv, "messaging.system", "nats")
		authztest.NoSecrets(t, spans, tok, userSub)
	})

	t.Run("denied", func(t *testing.T) {
		ctx, id := startTestTrace(t)
		wrong := m.userTxn(t, "create:orders", nil)
		ctx = authz.WithClaims(ctx, &authz.Claims{Txn: "t", Subject: userSub}, wrong)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := Request(ctx, nc, "authmesh.users.trace", nil)
		if !errors.Is(err, authz.ErrInsufficientScope) {
			t.Fatalf("got %v", err)
		}
		spans := spansOf(t, id, "request authmesh.users.trace", "process authmesh.users.trace")
		srv, cli := one(t, spans, "process authmesh.users.trace"), one(t, spans, "request authmesh.users.trace")
		wantAttr(t, srv, "authz.decision", "denied")
		wantAttr(t, srv, "authz.error_code", "insufficient_scope")
		wantAttr(t, srv, "nats.micro.error_code", int64(403))
		wantAttr(t, cli, "nats.micro.error_code", int64(403))
		if cli.Status.Code != codes.Error {
			t.Errorf("client span status %v", cli.Status)
		}
		authztest.NoSecrets(t, spans, wrong, userSub)
	})
}

// TestSpansJetStream: a publish is a producer span; each delivery a
// consumer span that is its child, with stream, consumer, stored time and
// delivery count; a redelivery is told apart, and a dead-lettered event
// shows as an event and an Error status.
func TestSpansJetStream(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	var calls atomic.Int32
	r.run(t, ConsumerConfig{MaxDeliver: 2, BackOff: []time.Duration{50 * time.Millisecond}, AckWait: 2 * time.Second},
		func(ctx context.Context, ev *Event) error {
			if ev.Type == "order.poison" || calls.Add(1) == 1 {
				return errors.New("not yet")
			}
			return nil
		})
	access := r.tenant.Token(t, authztest.Claims{"permissions": []string{"create:orders"}})

	publish := func(t *testing.T, subj, typ string) (trace.TraceID, tracetest.SpanStub, tracetest.SpanStubs) {
		ctx, id := startTestTrace(t)
		ctx = userCtxFrom(ctx, t, r.access, r.ex, access, anySubject("create:orders"))
		if _, err := PublishEvent(ctx, r.js, subj, typ, "o-"+typ, userSub, map[string]string{"order_id": "o1"}); err != nil {
			t.Fatal(err)
		}
		spans := spansOf(t, id, "publish "+subj)
		return id, one(t, spans, "publish "+subj), spans
	}

	t.Run("redelivered", func(t *testing.T) {
		id, prod, _ := publish(t, "orders.events.traced", "order.created")
		if prod.SpanKind != trace.SpanKindProducer {
			t.Fatalf("producer kind %v", prod.SpanKind)
		}
		wantAttr(t, prod, "messaging.jetstream.stream", "ORDERS_EVENTS")
		wantAttr(t, prod, "authmesh.event_type", "order.created") // not the id: it may be a subject
		var deliveries tracetest.SpanStubs
		authztest.Eventually(t, 5*time.Second, func() bool {
			deliveries = named(spansOf(t, id), "process orders.events.traced")
			return len(deliveries) == 2
		}, "two deliveries")
		for i, d := range deliveries {
			if d.SpanKind != trace.SpanKindConsumer || !childOf(d, prod) {
				t.Fatalf("delivery %d: kind %v parent %v, want child of the producer", i, d.SpanKind, d.Parent)
			}
			wantAttr(t, d, "messaging.jetstream.delivery_count", int64(i+1))
			if i > 0 {
				wantAttr(t, d, "messaging.jetstream.redelivered", true)
			} else if v, ok := attr(d, "messaging.jetstream.redelivered"); ok {
				t.Errorf("first delivery: redelivered = %v, want absent", v.AsInterface())
			}
			wantAttr(t, d, "messaging.consumer.group.name", "billing-orders")
			wantAttr(t, d, "authz.decision", "allowed")
			if v, _ := attr(d, "messaging.jetstream.stored_time"); v.AsString() == "" {
				t.Errorf("delivery %d has no stored time", i)
			}
		}
		wantAttr(t, deliveries[0], "authmesh.result", "retried")
		wantAttr(t, deliveries[1], "authmesh.result", "accepted")
		if len(deliveries[0].Events) == 0 || deliveries[0].Events[0].Name != EventRetried {
			t.Errorf("first delivery events %v", deliveries[0].Events)
		}
		authztest.NoSecrets(t, append(deliveries, prod), access, userSub)
	})

	t.Run("dead-lettered", func(t *testing.T) {
		id, prod, _ := publish(t, "orders.events.poison", "order.poison")
		var d tracetest.SpanStub
		authztest.Eventually(t, 5*time.Second, func() bool {
			for _, s := range named(spansOf(t, id), "process orders.events.poison") {
				for _, e := range s.Events {
					if e.Name == EventDeadLettered {
						d = s
						return true
					}
				}
			}
			return false
		}, "a dead-lettered delivery")
		if !childOf(d, prod) || d.Status.Code != codes.Error {
			t.Fatalf("dead-lettered delivery: parent %v status %v", d.Parent, d.Status)
		}
		wantAttr(t, d, "authmesh.result", "dead_lettered")
		wantAttr(t, d, "messaging.jetstream.delivery_count", int64(2))
		// The dead letter itself points at this delivery.
		var dead *nats.Msg
		authztest.Eventually(t, 5*time.Second, func() bool { _, dead = r.outcome("orders.events.poison"); return dead != nil }, "dead letter")
		sc := trace.SpanContextFromContext(ContextFromHeaders(context.Background(), dead.Header))
		if sc.SpanID() != d.SpanContext.SpanID() {
			t.Errorf("dead letter's trace context %v, want the delivery's span", sc)
		}
	})
}

// TestStoredTrace: TraceCarrier keeps traceparent and tracestate, its JSON
// is the W3C headers by name (what billing stored as a map before
// StoredTrace, so those records still decode), a zero one is left out under
// omitzero, and ContinueTrace resumes exactly the stored span.
func TestStoredTrace(t *testing.T) {
	t.Parallel()
	if got := TraceCarrier(context.Background()); !got.IsZero() {
		t.Fatalf("no trace: %+v, want zero", got)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	st := TraceCarrier(withTraceparent(context.Background(), tp, "k=v"))
	if st != (StoredTrace{Traceparent: tp, Tracestate: "k=v"}) {
		t.Fatalf("carrier %+v", st)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	asMap, err := json.Marshal(map[string]string{HeaderTraceparent: tp, HeaderTracestate: "k=v"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(asMap) {
		t.Fatalf("JSON %s, want %s", b, asMap)
	}
	var back StoredTrace
	if err := json.Unmarshal(asMap, &back); err != nil || back != st {
		t.Fatalf("decode %s: %+v, %v", asMap, back, err)
	}
	type record struct {
		ID    string      `json:"id"`
		Trace StoredTrace `json:"trace,omitzero"`
	}
	if b, _ := json.Marshal(record{ID: "i1"}); string(b) != `{"id":"i1"}` {
		t.Fatalf("zero trace encoded as %s", b)
	}
	continued := ContinueTrace(context.Background(), st)
	ct, ok := continued.Value(continuedTraceKey{}).(continuedTrace)
	if !ok || ct.parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		ct.parent.SpanID().String() != "00f067aa0ba902b7" || ct.parent.TraceState().Get("k") != "v" {
		t.Fatalf("continued from %+v", ct.parent)
	}
}

// TestContinueTrace: an event published under ContinueTrace is a child of
// the stored trace context and links to the span that published it.
func TestContinueTrace(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	stored, storedID := startTestTrace(t)
	carrier := TraceCarrier(stored)
	if len(carrier.Traceparent) != 55 {
		t.Fatalf("carrier %v", carrier)
	}
	ctx, payID := startTestTrace(t)
	pay := trace.SpanContextFromContext(ctx)
	access := r.tenant.Token(t, authztest.Claims{"permissions": []string{"create:orders"}})
	ctx = userCtxFrom(ContinueTrace(ctx, carrier), t, r.access, r.ex, access, anySubject("create:orders"))
	if _, err := PublishEvent(ctx, r.js, "orders.events.paid", "invoice.paid", "i1", userSub, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	prod := one(t, spansOf(t, storedID, "publish orders.events.paid"), "publish orders.events.paid")
	if prod.Parent.SpanID() != trace.SpanContextFromContext(stored).SpanID() {
		t.Fatalf("producer parent %v, want the stored span", prod.Parent)
	}
	if len(prod.Links) != 1 || prod.Links[0].SpanContext.SpanID() != pay.SpanID() || prod.Links[0].SpanContext.TraceID() != payID {
		t.Fatalf("links %v, want the publishing request's span", prod.Links)
	}
	if ContinueTrace(ctx, StoredTrace{}) != ctx || ContinueTrace(ctx, StoredTrace{Traceparent: "junk"}) != ctx {
		t.Fatal("an unusable stored context must leave ctx alone")
	}
}
