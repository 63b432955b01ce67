package telemetry

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// capture is an OTLP/HTTP endpoint that keeps the bodies it is sent.
type capture struct {
	*httptest.Server
	bodies chan []byte
}

func newCapture(t testing.TB) *capture {
	c := &capture{bodies: make(chan []byte, 16)}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case c.bodies <- b:
		default:
		}
	}))
	t.Cleanup(c.Close)
	return c
}

// request is the next body sent, decoded, with its ResourceSpans in a stable
// order (the SDK's exporter lists them in map order).
func (c *capture) request(t *testing.T) *coltracepb.ExportTraceServiceRequest {
	t.Helper()
	var req coltracepb.ExportTraceServiceRequest
	select {
	case b := <-c.bodies:
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("nothing was exported")
	}
	slices.SortFunc(req.ResourceSpans, func(a, b *tracepb.ResourceSpans) int {
		return cmp.Compare(prototext.Format(a.Resource), prototext.Format(b.Resource))
	})
	return &req
}

// recordSpans ends spans of every shape the OTLP conversion has a case for,
// from two resources and three scopes, in an interleaved order.
func recordSpans(t testing.TB) []sdktrace.ReadOnlySpan {
	rec := tracetest.NewSpanRecorder()
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.43.0",
		attribute.String("service.name", "orders"), attribute.Int("k8s.replicas", 3))
	other := resource.NewSchemaless(attribute.String("service.name", "billing"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res),
		sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{AttributeCountLimit: 6, EventCountLimit: 1, LinkCountLimit: 1,
			AttributeValueLengthLimit: -1, AttributePerEventCountLimit: -1, AttributePerLinkCountLimit: -1}))
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(other))
	tp3 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(resource.Empty()))
	t.Cleanup(func() {
		for _, p := range []*sdktrace.TracerProvider{tp, tp2, tp3} {
			_ = p.Shutdown(context.Background())
		}
	})

	a := tp.Tracer("a")
	b := tp.Tracer("b", trace.WithInstrumentationVersion("1.2.3"), trace.WithSchemaURL("https://example.com/s"),
		trace.WithInstrumentationAttributes(attribute.Bool("scope.attr", true)))
	c := tp2.Tracer("a")

	ts, err := trace.ParseTraceState("vendor=opaque,other=1")
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5},
		TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	linked := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8},
		TraceState: ts, Remote: true})

	ctx, root := a.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "POST /v1/orders",
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("http.request.method", "POST")))
	root.SetAttributes(attribute.Int64("http.response.status_code", 201), attribute.Bool("authz.key_cache_hit", true),
		attribute.Float64("ratio", 0.25), attribute.String("http.request.method", "PUT")) // a duplicate key
	root.AddEvent("authz.key_refetch", trace.WithAttributes(attribute.String("outcome", "fetched")))
	root.AddEvent("dropped: over the event limit")
	_, child := b.Start(ctx, "publish orders.events.created", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(trace.Link{SpanContext: linked, Attributes: []attribute.KeyValue{attribute.String("authmesh.link", "caused_by")}},
			trace.Link{SpanContext: remote}))
	child.SetAttributes(
		attribute.BoolSlice("bools", []bool{true, false}), attribute.Int64Slice("ints", []int64{1, -2}),
		attribute.Float64Slice("floats", []float64{1.5}), attribute.StringSlice("strings", []string{"x", ""}),
		attribute.ByteSlice("bytes", []byte{0, 1}), attribute.Slice("mixed", attribute.IntValue(1), attribute.StringValue("s")),
		attribute.Map("map", attribute.String("k", "v"), attribute.Bool("", false)), attribute.String("over.the.limit", "dropped"))
	child.SetStatus(codes.Error, "boom")
	child.End()
	_, d := c.Start(ctx, "kv put billing_invoices", trace.WithSpanKind(trace.SpanKindClient))
	d.SetStatus(codes.Ok, "")
	d.End()
	_, e := a.Start(context.Background(), "internal, no parent", trace.WithAttributes(
		attribute.String("two-byte length", strings.Repeat("x", 200)), attribute.String("three-byte length", strings.Repeat("y", 20000)),
		attribute.Int64("zero", 0), attribute.String("empty", ""), attribute.Bool("false", false), attribute.Float64("negative", -1.5)))
	e.End()
	_, g := tp3.Tracer("", trace.WithSchemaURL("https://example.com/only-a-schema")).Start(ctx, "empty resource, scope of a schema only")
	g.End()
	_, f := tp2.Tracer("").Start(ctx, "consumer, empty scope", trace.WithSpanKind(trace.SpanKindConsumer))
	f.End()
	root.End()
	return rec.Ended()
}

// exportBoth sends spans through the SDK's exporter and through this
// package's, each to its own capture, and returns what each sent.
func exportBoth(t *testing.T, ours *exporter, oursAt *capture, spans []sdktrace.ReadOnlySpan) (want, got *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	ref := newCapture(t)
	sdk, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(ref.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Shutdown(context.Background())
	if err := sdk.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if err := ours.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	return ref.request(t), oursAt.request(t)
}

func newTestExporter(t *testing.T) (*exporter, *capture) {
	t.Helper()
	c := newCapture(t)
	e, err := newExporter(context.Background(), otlptracehttp.NewClient(otlptracehttp.WithEndpointURL(c.URL+"/v1/traces")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e, c
}

// TestExporterSendsWhatTheSDKSends: the same spans give the same OTLP
// request, message for message, as the SDK's own exporter, and still do
// when the exporter reuses its messages for a smaller batch, a larger one
// and a batch with a nil span.
func TestExporterSendsWhatTheSDKSends(t *testing.T) {
	spans := recordSpans(t)
	if len(spans) != 6 {
		t.Fatalf("recorded %d spans", len(spans))
	}
	ours, at := newTestExporter(t)
	batches := [][]sdktrace.ReadOnlySpan{
		spans,
		spans[:2],
		slices.Concat(spans, spans, recordSpans(t)),
		{nil, spans[3], nil},
		spans[4:],
	}
	for i, batch := range batches {
		want, got := exportBoth(t, ours, at, batch)
		if !proto.Equal(want, got) {
			t.Fatalf("batch %d: ours differs from the SDK's\nSDK:  %s\nours: %s", i, prototext.Format(want), prototext.Format(got))
		}
		if i == 0 && (len(got.ResourceSpans) != 3 || len(got.ResourceSpans[2].ScopeSpans) != 2) {
			t.Fatalf("batch 0 is not three resources, one of two scopes: %s", prototext.Format(got))
		}
	}
}

// TestExporterNothingToSend: a batch of no spans, or only nil ones, sends no
// request; after Shutdown nothing is sent either.
func TestExporterNothingToSend(t *testing.T) {
	ours, at := newTestExporter(t)
	for _, batch := range [][]sdktrace.ReadOnlySpan{nil, {nil}} {
		if err := ours.ExportSpans(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := ours.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ours.ExportSpans(context.Background(), recordSpans(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(at.bodies); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

// TestExporterReportsUploadFailures: a receiver that refuses is an error of
// the export (the batch processor hands it to the error handler).
func TestExporterReportsUploadFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadRequest)
	}))
	defer srv.Close()
	ours, err := newExporter(context.Background(), otlptracehttp.NewClient(otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces")))
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Shutdown(context.Background())
	err = ours.ExportSpans(context.Background(), recordSpans(t))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("traces export")) {
		t.Fatalf("error %v", err)
	}
	if errors.Unwrap(err) == nil {
		t.Fatalf("error %v does not wrap the client's", err)
	}
}

// TestExporterJSON: with OTEL_EXPORTER_OTLP_PROTOCOL=http/json the SDK's
// exporter sends the spans in JSON (this package's encoding is protobuf
// only: a JSON request would carry none of it).
func TestExporterJSON(t *testing.T) {
	cfg, err := Parse("orders", func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://unused"}[k]
	})
	if err != nil || !cfg.JSON {
		t.Fatalf("%+v %v", cfg, err)
	}
	c := newCapture(t)
	cfg.Endpoint = c.URL + "/v1/traces"
	exp, err := cfg.exporter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background())
	if err := exp.ExportSpans(context.Background(), recordSpans(t)); err != nil {
		t.Fatal(err)
	}
	body := <-c.bodies
	if !bytes.HasPrefix(body, []byte("{")) || !bytes.Contains(body, []byte(`"POST /v1/orders"`)) {
		t.Fatalf("not the spans in JSON: %.200s", body)
	}
}

// BenchmarkExport is one batch of 512 spans shaped like an order's (six
// attributes each) encoded and sent to a receiver that discards it: the
// SDK's exporter against this package's.
func BenchmarkExport(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := tp.Tracer("bench")
	for i := range 512 {
		_, s := tr.Start(context.Background(), "kv put orders", trace.WithSpanKind(trace.SpanKindClient))
		s.SetAttributes(attribute.String("db.system.name", "nats_kv"), attribute.Int64("kv.revision", int64(i)),
			attribute.String("authz.decision", "allowed"), attribute.String("authz.kid", "dev-1"),
			attribute.Bool("authz.key_cache_hit", true), attribute.String("order.id", "251d811e-a64a-45b4-83e8-fbf2c6bd5015"))
		s.End()
	}
	spans := rec.Ended()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer srv.Close()
	endpoint := otlptracehttp.WithEndpointURL(srv.URL + "/v1/traces")
	sdk, err := otlptracehttp.New(context.Background(), endpoint)
	if err != nil {
		b.Fatal(err)
	}
	ours, err := newExporter(context.Background(), otlptracehttp.NewClient(endpoint))
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name string
		exp  sdktrace.SpanExporter
	}{{"sdk", sdk}, {"protowire", ours}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := v.exp.ExportSpans(context.Background(), spans); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
