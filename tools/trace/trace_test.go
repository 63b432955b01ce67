package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/waterfall.golden from the renderer")

// recordedID is the trace in testdata/trace.json: Jaeger v2's answer to
// /api/traces/{id}, recorded from the binary tools/jaeger builds after OTLP
// spans shaped like an order's (three services, request-reply, JetStream
// links, a denial) were posted to it.
const recordedID = "4bf92f3577b34da6a3ce929d0e0e4736"

func recorded(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/trace.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordedData is the one trace of testdata/trace.json's answer, decoded
// as T: a Trace, or json.RawMessage to build other answers from.
func recordedData[T any](t testing.TB) T {
	t.Helper()
	var env struct{ Data []T }
	if err := json.Unmarshal(recorded(t), &env); err != nil || len(env.Data) != 1 {
		t.Fatalf("testdata/trace.json: %d traces, %v; want one", len(env.Data), err)
	}
	return env.Data[0]
}

// fakeJaeger serves the query API from canned answers by path; every
// request's query is kept for the test to check.
type fakeJaeger struct {
	answers map[string]string // path -> body (200)
	queries []string
}

func (f *fakeJaeger) start(t *testing.T) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.queries = append(f.queries, r.URL.RawQuery)
		body, ok := f.answers[r.URL.Path]
		if !ok {
			// What Jaeger answers for a trace it does not hold.
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`))
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return &Client{URL: srv.URL}
}

func TestDecodeRecordedTrace(t *testing.T) {
	t.Parallel()
	f := &fakeJaeger{answers: map[string]string{"/api/traces/" + recordedID: string(recorded(t))}}
	tr, err := f.start(t).Trace(context.Background(), recordedID)
	if err != nil {
		t.Fatal(err)
	}
	if tr.TraceID != recordedID || len(tr.Spans) != 7 {
		t.Fatalf("trace %s with %d spans, want %s with 7", tr.TraceID, len(tr.Spans), recordedID)
	}
	if got, want := strings.Join(tr.Services(), ","), "orders,users,billing"; got != want {
		t.Errorf("services %s, want %s", got, want)
	}
	byName := map[string]Span{}
	for _, s := range tr.Spans {
		byName[tr.Service(s)+" "+s.OperationName] = s
	}
	root := byName["orders POST /v1/orders"]
	for k, want := range map[string]string{"authz.decision": "allowed", "authz.policy": "orders:create", "http.response.status_code": "201", "span.kind": "server"} {
		if got, _ := root.Tag(k); got != want {
			t.Errorf("root span %s = %q, want %q", k, got, want)
		}
	}
	if len(root.Logs) != 1 || root.Logs[0].Fields[0].String() != "authz.key_refetch" {
		t.Errorf("root span's events: %+v, want authz.key_refetch", root.Logs)
	}
	// The consumer span's parent is also its link: Jaeger keeps the two as
	// one FOLLOWS_FROM reference.
	consumer := byName["billing orders.created process"]
	if r := consumer.References; len(r) != 1 || r[0].RefType != FollowsFrom || r[0].SpanID != byName["orders orders.created publish"].SpanID {
		t.Errorf("billing's consumer span: references %+v, want FOLLOWS_FROM the publish span", r)
	}
	if r := byName["users users.profile.get"].References; len(r) != 1 || r[0].RefType != ChildOf || r[0].SpanID != byName["orders users.profile.get"].SpanID {
		t.Errorf("users' server span: references %+v, want CHILD_OF orders' client span", r)
	}
}

func TestRenderRecordedTrace(t *testing.T) {
	t.Parallel()
	tr := recordedData[Trace](t)
	var out bytes.Buffer
	if err := Render(&out, tr, Options{Width: 30}); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("testdata/waterfall.golden", out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile("testdata/waterfall.golden")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(golden) {
		t.Errorf("waterfall differs from testdata/waterfall.golden (go test -update rewrites it):\n%s", out.String())
	}
	// The golden file itself is read by a person; hold its meaning here too.
	lines := strings.Split(out.String(), "\n")
	mustLine := func(parts ...string) {
		t.Helper()
		for _, l := range lines {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return
			}
		}
		t.Errorf("no line with %q in\n%s", parts, out.String())
	}
	if !strings.HasPrefix(lines[2], "orders ") || !strings.Contains(lines[2], " POST /v1/orders ") || !strings.Contains(lines[2], "+0µs") {
		t.Errorf("first span line %q: want the root, orders' POST /v1/orders at +0µs", lines[2])
	}
	mustLine("users", "│  └─ users.profile.get", "authz.decision=denied", "authz.error_code=insufficient_scope", "ERROR forbidden")
	mustLine("POST /v1/orders", "authz.decision=allowed", "authz.policy=orders:create", "event=authz.key_refetch")
	mustLine("billing", "└─ orders.created process", "authz.policy=orders-service")
	mustLine(`↳ link: orders "orders.created publish" at +9.00ms`)
	mustLine("↳ link: trace 0af7651916cd43dd8448eb211c80319c span b7ad6b7169203331 (not in this trace)")
	if n := strings.Count(out.String(), "█"); n == 0 {
		t.Error("no duration bars")
	}
}

// TestRenderMalformed: whatever Jaeger (or a hostile proxy) sends, every span
// is drawn exactly once and nothing panics.
func TestRenderMalformed(t *testing.T) {
	t.Parallel()
	ref := func(kind, id string) []Ref { return []Ref{{RefType: kind, SpanID: id}} }
	cases := map[string][]Span{
		"cycle":          {{SpanID: "a", OperationName: "A", References: ref(ChildOf, "b")}, {SpanID: "b", OperationName: "B", References: ref(ChildOf, "a")}},
		"self parent":    {{SpanID: "a", OperationName: "A", References: ref(ChildOf, "a")}},
		"missing parent": {{SpanID: "a", OperationName: "A", References: ref(ChildOf, "zz")}, {SpanID: "b", OperationName: "B", StartTime: 5}},
		"duplicate ids":  {{SpanID: "a", OperationName: "A", Duration: 3}, {SpanID: "a", OperationName: "B", StartTime: 1}},
		"negative times": {{SpanID: "a", OperationName: "A", StartTime: -50, Duration: -7}, {SpanID: "b", OperationName: "B", References: ref(FollowsFrom, "a")}},
		"long name":      {{SpanID: "a", OperationName: strings.Repeat("x", 500)}},
	}
	for name, spans := range cases {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Render(&out, Trace{TraceID: "ab", Spans: spans}, Options{}); err != nil {
				t.Fatal(err)
			}
			body := strings.SplitN(out.String(), "\n", 3)[2]
			if got := strings.Count(body, "\n") - strings.Count(body, "↳"); got != len(spans) {
				t.Errorf("%d span lines for %d spans:\n%s", got, len(spans), out.String())
			}
		})
	}
	if err := Render(&bytes.Buffer{}, Trace{TraceID: "ab"}, Options{}); !errors.Is(err, ErrNoTrace) {
		t.Errorf("empty trace: %v, want ErrNoTrace", err)
	}
}

func FuzzRender(f *testing.F) {
	f.Add(recorded(f))
	f.Add([]byte(`{"data":[{"traceID":"1","spans":[{"spanID":"a","references":[{"refType":"CHILD_OF","spanID":"a"}]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var env struct{ Data []Trace }
		if json.Unmarshal(b, &env) != nil {
			return
		}
		for _, tr := range env.Data {
			_ = Render(&bytes.Buffer{}, tr, Options{Width: 7})
		}
	})
}

func TestLatestPicksTheNewestOrder(t *testing.T) {
	t.Parallel()
	raw := recordedData[json.RawMessage](t)
	// A second, later order: the same trace moved 5 s on, with another id.
	later := strings.ReplaceAll(string(raw), recordedID, "11111111111111111111111111111111")
	var tr Trace
	json.Unmarshal([]byte(later), &tr)
	for i := range tr.Spans {
		tr.Spans[i].StartTime += 5_000_000
	}
	b, _ := json.Marshal(tr)
	f := &fakeJaeger{answers: map[string]string{"/api/traces": `{"data":[` + string(raw) + `,` + string(b) + `]}`}}
	got, err := f.start(t).Latest(context.Background(), OrdersService, CreateOrderSpan, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got.TraceID != "11111111111111111111111111111111" {
		t.Errorf("latest order: trace %s, want the later one", got.TraceID)
	}
	q := f.queries[0]
	for _, want := range []string{"service=orders", "operation=POST+%2Fv1%2Forders", "limit=50", "start=", "end="} {
		if !strings.Contains(q, want) {
			t.Errorf("search query %q lacks %q", q, want)
		}
	}
}

func TestByOrder(t *testing.T) {
	t.Parallel()
	raw := recordedData[json.RawMessage](t)
	// A later trace that names the order too, without creating it: its payment.
	pay, _ := json.Marshal(Trace{TraceID: "22222222222222222222222222222222", Processes: map[string]Process{"p1": {ServiceName: "billing"}},
		Spans: []Span{{SpanID: "aa", OperationName: "POST /v1/invoices/:id/pay", ProcessID: "p1", StartTime: 1 << 60,
			Tags: []KeyValue{{Key: "kv.key", Type: "string", Value: json.RawMessage(`"inv_ord_7Kq2"`)}}}}})
	// Jaeger's search: a tags filter matches order.id exactly; tagged says
	// whether the spans carry it at all (older spans may not).
	jaeger := func(tagged bool) (*Client, *[]string) {
		var queries []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			queries = append(queries, r.URL.RawQuery)
			tags := r.URL.Query().Get("tags")
			if tags != "" && (!tagged || tags != `{"order.id":"ord_7Kq2"}`) {
				w.Write([]byte(`{"data":[]}`))
				return
			}
			w.Write([]byte(`{"data":[` + string(pay) + `,` + string(raw) + `]}`))
		}))
		t.Cleanup(srv.Close)
		return &Client{URL: srv.URL}, &queries
	}
	ctx := context.Background()
	c, queries := jaeger(true)
	if got, err := c.ByOrder(ctx, "ord_7Kq2", time.Hour); err != nil || got.TraceID != recordedID {
		t.Fatalf("ByOrder by tag: %v %v, want trace %s", got.TraceID, err, recordedID)
	}
	if len(*queries) != 1 || !strings.Contains((*queries)[0], "tags=%7B%22order.id%22%3A%22ord_7Kq2%22%7D") {
		t.Errorf("searches %q: want one, with the order.id tag", *queries)
	}
	c, _ = jaeger(false)
	if got, err := c.ByOrder(ctx, "ord_7Kq2", time.Hour); err != nil || got.TraceID != recordedID {
		t.Fatalf("ByOrder by scanning attributes: %v %v, want trace %s, where the order was created, not its later payment", got.TraceID, err, recordedID)
	}
	if _, err := c.ByOrder(ctx, "ord_unknown", time.Hour); err == nil {
		t.Error("an order no span names: found a trace")
	}
	for _, id := range []string{"../api", "ord_7K", "a b c d e f"} {
		if _, err := c.ByOrder(ctx, id, time.Hour); err == nil {
			t.Errorf("order id %q: accepted", id)
		}
	}
}

func TestClearErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// Nothing listens: say so, and how to start Jaeger.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	_, err = (&Client{URL: down}).Latest(ctx, OrdersService, CreateOrderSpan, time.Hour)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "make run TRACING=1") || !strings.Contains(err.Error(), down) {
		t.Errorf("Jaeger down: %v", err)
	}

	// Jaeger runs but has never seen the orders service.
	f := &fakeJaeger{answers: map[string]string{"/api/traces": `{"data":[]}`, "/api/services": `{"data":["jaeger"],"total":1}`}}
	_, err = f.start(t).Latest(ctx, OrdersService, CreateOrderSpan, time.Hour)
	if !errors.Is(err, ErrNoTrace) || !strings.Contains(err.Error(), "no spans of orders") || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Errorf("no orders spans: %v", err)
	}

	// orders exports, but no span has the name asked for: list those it has.
	f = &fakeJaeger{answers: map[string]string{"/api/traces": `{"data":null}`, "/api/services": `{"data":["orders"]}`,
		"/api/services/orders/operations": `{"data":["GET /v1/orders/:id","orders.created publish"]}`}}
	_, err = f.start(t).Latest(ctx, OrdersService, CreateOrderSpan, time.Hour)
	if !errors.Is(err, ErrNoTrace) || !strings.Contains(err.Error(), "GET /v1/orders/:id, orders.created publish") {
		t.Errorf("no such span: %v", err)
	}

	// A trace id Jaeger does not hold (its own 404 answer).
	_, err = f.start(t).Trace(ctx, "abc123")
	if !errors.Is(err, ErrNoTrace) || !strings.Contains(err.Error(), "no trace abc123") {
		t.Errorf("unknown trace: %v", err)
	}

	// Not a trace id: refused before any request.
	f = &fakeJaeger{}
	for _, id := range []string{"", "xyz", "../../api/services", strings.Repeat("a", 33)} {
		if _, err := f.start(t).Trace(ctx, id); err == nil {
			t.Errorf("trace id %q accepted", id)
		}
	}
	if len(f.queries) != 0 {
		t.Errorf("bad ids reached Jaeger: %q", f.queries)
	}

	// The wrong port (OTLP, or anything else that is not the query API).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hi</html>")) }))
	defer srv.Close()
	_, err = (&Client{URL: srv.URL}).Services(ctx)
	if err == nil || !strings.Contains(err.Error(), "not the query API's JSON") {
		t.Errorf("wrong port: %v", err)
	}
}

// TestLinkedSpans: a link out of the trace (the payment request an
// invoice.paid event continues from) is named from the linked trace; one
// Jaeger no longer holds keeps its ids.
func TestLinkedSpans(t *testing.T) {
	t.Parallel()
	tr := recordedData[Trace](t)
	const payTrace = "0af7651916cd43dd8448eb211c80319c"
	pay, _ := json.Marshal(Trace{TraceID: payTrace, Processes: map[string]Process{"p1": {ServiceName: "billing"}},
		Spans: []Span{{SpanID: "b7ad6b7169203331", OperationName: "POST /v1/invoices/:id/pay", ProcessID: "p1"}}})
	for _, held := range []bool{true, false} {
		f := &fakeJaeger{answers: map[string]string{}}
		if held {
			f.answers["/api/traces/"+payTrace] = `{"data":[` + string(pay) + `]}`
		}
		linked := f.start(t).LinkedSpans(context.Background(), tr)
		var out bytes.Buffer
		if err := Render(&out, tr, Options{Linked: linked}); err != nil {
			t.Fatal(err)
		}
		want := `↳ link: billing "POST /v1/invoices/:id/pay" in trace ` + payTrace
		if !held {
			want = "↳ link: trace " + payTrace + " span b7ad6b7169203331 (not in this trace)"
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("held %v: no %q in\n%s", held, want, out.String())
		}
		if len(f.queries) != 1 {
			t.Errorf("held %v: %d fetches, want one for the one linked trace", held, len(f.queries))
		}
	}
}
