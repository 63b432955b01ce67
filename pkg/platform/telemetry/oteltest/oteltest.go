// Package oteltest is an in-process OTLP/HTTP trace receiver for tests and
// benchmarks: point a service's OTEL_EXPORTER_OTLP_ENDPOINT at
// Receiver.Endpoint and read back every span it exported, decoded from the
// OTLP protobuf (go.opentelemetry.io/proto/otlp) into plain values.
//
//	rcv := oteltest.Start()
//	defer rcv.Close()
//	env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.Endpoint())
//	...
//	spans, err := rcv.Wait(ctx, func(s []oteltest.Span) bool { return len(oteltest.Trace(s, id)) >= 5 })
//
// It accepts POST /v1/traces with Content-Type application/x-protobuf
// (optionally gzip-compressed), what the OpenTelemetry SDKs' OTLP/HTTP
// exporters send; OTLP/JSON is answered 415. Set Discard for a load test
// that only needs the span count: the receiver is then a cheap sink that
// counts the spans in the protobuf without decoding it (no allocation per
// span), so on a shared machine it takes as little CPU as possible from the
// services it measures — a real deployment exports to a collector elsewhere.
package oteltest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// maxBody bounds one export request (the SDK's batches are far smaller).
const maxBody = 32 << 20

// Span is one exported span, its ids in lower-case hex and every value as a
// string (ints and doubles formatted, bools "true"/"false", arrays and
// maps as their text form).
type Span struct {
	TraceID, SpanID, ParentSpanID string
	TraceState                    string
	Name                          string
	Kind                          string // "server", "client", "producer", "consumer", "internal"
	Service                       string // the resource's service.name
	Scope                         string // the instrumentation scope's name
	Start, End                    time.Time
	Attrs                         map[string]string
	Events                        []Event
	Links                         []Link
	StatusCode                    string // "unset", "ok" or "error"
	StatusMessage                 string
	Resource                      map[string]string
}

// Event is a span event.
type Event struct {
	Name  string
	Time  time.Time
	Attrs map[string]string
}

// Link is a span link.
type Link struct {
	TraceID, SpanID string
	Attrs           map[string]string
}

// Attr returns the attribute key of the span.
func (s Span) Attr(key string) (string, bool) {
	v, ok := s.Attrs[key]
	return v, ok
}

// Duration is End - Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Strings returns every string the span carries: its name, status message,
// trace state, and every key and value of its attributes, events, links and
// resource. A test scans them for what must never be recorded.
func (s Span) Strings() []string {
	out := []string{s.Name, s.StatusMessage, s.TraceState}
	add := func(m map[string]string) {
		for k, v := range m {
			out = append(out, k, v)
		}
	}
	add(s.Attrs)
	add(s.Resource)
	for _, e := range s.Events {
		out = append(out, e.Name)
		add(e.Attrs)
	}
	for _, l := range s.Links {
		add(l.Attrs)
	}
	return out
}

// Trace returns the spans of trace id, in start order.
func Trace(spans []Span, traceID string) []Span {
	var out []Span
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b Span) int { return a.Start.Compare(b.Start) })
	return out
}

// Receiver is an OTLP/HTTP trace receiver. Its methods are safe for
// concurrent use.
type Receiver struct {
	// Discard, when set before the first export, keeps only the count and
	// does not decode the spans (malformed requests are still refused).
	Discard bool

	srv      *http.Server
	ln       net.Listener
	count    atomic.Int64
	requests atomic.Int64

	mu      sync.Mutex
	spans   []Span
	changed chan struct{} // closed and replaced on every export
}

// Start serves a Receiver on a free port of 127.0.0.1. It panics if no
// port can be had (a test cannot go on without it).
func Start() *Receiver {
	r, err := Listen("127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("oteltest: %v", err))
	}
	return r
}

// Listen serves a Receiver on addr.
func Listen(addr string) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{ln: ln, changed: make(chan struct{})}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
func (r *Receiver) Endpoint() string { return "http://" + r.ln.Addr().String() }

// Close stops serving.
func (r *Receiver) Close() { _ = r.srv.Close() }

// Count is the number of spans received (also with Discard).
func (r *Receiver) Count() int64 { return r.count.Load() }

// Requests is the number of export requests accepted.
func (r *Receiver) Requests() int64 { return r.requests.Load() }

// Spans returns a copy of every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Reset forgets the spans received so far (not the count).
func (r *Receiver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = nil
}

// Wait returns the spans once done holds for them, or ctx's error with the
// spans received by then.
func (r *Receiver) Wait(ctx context.Context, done func([]Span) bool) ([]Span, error) {
	for {
		r.mu.Lock()
		spans, changed := slices.Clone(r.spans), r.changed
		r.mu.Unlock()
		if done(spans) {
			return spans, nil
		}
		select {
		case <-ctx.Done():
			return spans, ctx.Err()
		case <-changed:
		}
	}
}

// ServeHTTP implements the OTLP/HTTP traces endpoint.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "POST /v1/traces only", http.StatusNotFound)
		return
	}
	if ct, _, _ := strings.Cut(req.Header.Get("Content-Type"), ";"); ct != "application/x-protobuf" {
		http.Error(w, "application/x-protobuf only", http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxBody)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxBody)
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(body); err != nil {
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	}
	if r.Discard {
		n, ok := countSpans(buf.Bytes())
		if !ok {
			http.Error(w, "not an ExportTraceServiceRequest", http.StatusBadRequest)
			return
		}
		r.count.Add(int64(n))
		r.requests.Add(1)
	} else {
		var msg coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(buf.Bytes(), &msg); err != nil {
			http.Error(w, "not an ExportTraceServiceRequest", http.StatusBadRequest)
			return
		}
		r.add(&msg)
	}
	// An empty ExportTraceServiceResponse is zero bytes of protobuf.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// countSpans counts the spans of an ExportTraceServiceRequest without
// decoding them: resource_spans (1) → scope_spans (2) → spans (2), every
// other field skipped. ok is false for bytes that are not well-formed
// protobuf at those three levels.
func countSpans(b []byte) (n int, ok bool) {
	const resourceSpans, scopeSpans, spans = 1, 2, 2
	return countNested(b, []protowire.Number{resourceSpans, scopeSpans, spans})
}

// countNested counts the length-delimited fields along path, the last
// number's occurrences summed over every enclosing message.
func countNested(b []byte, path []protowire.Number) (int, bool) {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, false
		}
		b = b[l:]
		if num != path[0] || typ != protowire.BytesType {
			l = protowire.ConsumeFieldValue(num, typ, b)
			if l < 0 {
				return 0, false
			}
			b = b[l:]
			continue
		}
		v, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return 0, false
		}
		b = b[l:]
		if len(path) == 1 {
			n++
			continue
		}
		m, ok := countNested(v, path[1:])
		if !ok {
			return 0, false
		}
		n += m
	}
	return n, true
}

func (r *Receiver) add(msg *coltracepb.ExportTraceServiceRequest) {
	var spans []Span
	n := 0
	for _, rs := range msg.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
			for _, s := range ss.GetSpans() {
				spans = append(spans, decode(s, res, ss.GetScope().GetName()))
			}
		}
	}
	r.count.Add(int64(n))
	r.requests.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, spans...)
	close(r.changed)
	r.changed = make(chan struct{})
}

func decode(s *tracepb.Span, res map[string]string, scope string) Span {
	out := Span{
		TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
		ParentSpanID: hex.EncodeToString(s.GetParentSpanId()), TraceState: s.GetTraceState(),
		Name: s.GetName(), Kind: kind(s.GetKind()), Service: res["service.name"], Scope: scope,
		Start: unixNano(s.GetStartTimeUnixNano()), End: unixNano(s.GetEndTimeUnixNano()),
		Attrs: attrs(s.GetAttributes()), Resource: res,
		StatusMessage: s.GetStatus().GetMessage(),
	}
	switch s.GetStatus().GetCode() {
	case tracepb.Status_STATUS_CODE_OK:
		out.StatusCode = "ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		out.StatusCode = "error"
	default:
		out.StatusCode = "unset"
	}
	for _, e := range s.GetEvents() {
		out.Events = append(out.Events, Event{Name: e.GetName(), Time: unixNano(e.GetTimeUnixNano()), Attrs: attrs(e.GetAttributes())})
	}
	for _, l := range s.GetLinks() {
		out.Links = append(out.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId()), Attrs: attrs(l.GetAttributes())})
	}
	return out
}

func kind(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	}
	return "internal"
}

func unixNano(n uint64) time.Time { return time.Unix(0, int64(n)) }

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.GetKey()] = value(kv.GetValue())
	}
	return out
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, value(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case *commonpb.AnyValue_KvlistValue:
		parts := make([]string, 0, len(x.KvlistValue.GetValues()))
		for _, kv := range x.KvlistValue.GetValues() {
			parts = append(parts, kv.GetKey()+"="+value(kv.GetValue()))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	return ""
}
