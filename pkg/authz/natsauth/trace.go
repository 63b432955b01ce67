package natsauth

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
)

// Tracing over NATS: the one way trace context crosses a process boundary
// is Propagator (W3C trace context and baggage) over HeaderCarrier, which
// reads a header in any case and writes the W3C names exactly. Spans are
// started with the global tracer provider (pkg/platform installs the SDK when
// OTEL_EXPORTER_OTLP_ENDPOINT is set); without one they are no-ops that
// still carry an incoming trace context through.

// Propagator injects and extracts trace context on every NATS message and
// HTTP request of the mesh (pkg/platform uses it for HTTP too).
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// tracerName is the instrumentation scope of natsauth's spans.
const tracerName = "github.com/authmesh/authmesh/pkg/authz/natsauth"

var natsTracer = authz.NewTracer(tracerName)

func tracer() *authz.Tracer { return natsTracer }

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier.
//
// nats.Header is case-sensitive (unlike http.Header), and
// propagation.HeaderCarrier would canonicalise "traceparent" to
// "Traceparent" on lookup: a message from a client that writes the W3C
// lower-case names (every non-Go OpenTelemetry SDK) would lose its trace.
// Get tries the exact key, then any casing; Set writes the key exactly as the
// propagator names it (the W3C lower-case names) and drops other casings of
// it, so a forwarded message never carries two trace contexts.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the first value of key in any casing.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces key (any casing) with value under exactly key.
func (h HeaderCarrier) Set(key, value string) {
	for k := range h {
		if k != key && strings.EqualFold(k, key) {
			delete(h, k)
		}
	}
	h[key] = []string{value}
}

// Keys lists the header names as they are.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Messaging span attributes (OpenTelemetry messaging semantic conventions,
// plus JetStream's own under messaging.jetstream.*). Not recorded:
// messaging.operation.type, which the span kind already says (producer and
// client: send; consumer and server: process) — every attribute costs about
// half a microsecond recorded and exported.
const (
	attrSystem        = attribute.Key("messaging.system")
	attrDestination   = attribute.Key("messaging.destination.name")
	attrOperation     = attribute.Key("messaging.operation.name")
	attrEventType     = attribute.Key("authmesh.event_type")
	attrConsumerGroup = attribute.Key("messaging.consumer.group.name")
	attrStream        = attribute.Key("messaging.jetstream.stream")
	attrStreamSeq     = attribute.Key("messaging.jetstream.sequence.stream")
	attrStored        = attribute.Key("messaging.jetstream.stored_time")
	attrDelivered     = attribute.Key("messaging.jetstream.delivery_count")
	attrRedelivered   = attribute.Key("messaging.jetstream.redelivered")
	attrDuplicate     = attribute.Key("messaging.jetstream.duplicate")
	attrEndpoint      = attribute.Key("nats.micro.endpoint")
	attrErrorCode     = attribute.Key("nats.micro.error_code")
	attrResult        = attribute.Key("authmesh.result")
	attrReason        = attribute.Key("authmesh.reason")

	// EventDeadLettered is the consumer span's event of a message sent to
	// the dead-letter stream (its status is then Error); EventRetried one
	// that was nak'ed to be delivered again.
	EventDeadLettered = "messaging.dead_lettered"
	EventRetried      = "messaging.retried"
)

var systemNATS = attrSystem.String("nats")

// startSpan starts a messaging span named "<operation> <subject>" with the
// messaging attributes. Name and attributes are built only for a span that
// records: with tracing off, or a trace not sampled, it is started under the
// bare operation and nothing is formatted or allocated for it. (The samplers
// telemetry installs decide on the trace id and parent alone, never the name.)
// Callers add their own attributes under span.IsRecording() too.
func startSpan(ctx context.Context, kind trace.SpanKind, op, subj string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := tracer().Start(ctx, op, append(opts, trace.WithSpanKind(kind))...)
	if span.IsRecording() {
		if kind != trace.SpanKindClient {
			// A receiver's span collects the most attributes, a few at a
			// time (the decision, the ids, the result), a producer's a few
			// after the acknowledgement: set at End, at once.
			ctx, span = authz.GatherAttributes(ctx, span)
		}
		span.SetName(op + " " + subj)
		authz.SetSpanAttributes(span, []attribute.KeyValue{systemNATS, attrDestination.String(subj), attrOperation.String(op)})
	}
	return ctx, span
}

// injectTrace writes ctx's trace context into h with the W3C names.
func injectTrace(ctx context.Context, h nats.Header) {
	Propagator.Inject(ctx, HeaderCarrier(h))
}

// failSpan marks span failed with err. natsauth's errors never carry a
// token: denial descriptions replace it, exchange errors name codes.
func failSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, truncate(err.Error(), 200))
	}
}

type continuedTraceKey struct{}

// continuedTrace is a stored trace context (ContinueTrace) and the span that
// is now acting on it.
type continuedTrace struct {
	parent trace.SpanContext
	now    trace.SpanContext
}

// StoredTrace is a trace context an entity keeps with its state
// (TraceCarrier), so that what happens to it later can join the trace it
// was created in (ContinueTrace). In JSON it is the W3C headers by their
// names: {"traceparent": "00-…", "tracestate": "…"}.
type StoredTrace struct {
	Traceparent string `json:"traceparent"`
	Tracestate  string `json:"tracestate,omitempty"`
}

// IsZero reports whether t holds no trace context (encoding/json's omitzero
// leaves such a field out).
func (t StoredTrace) IsZero() bool { return t == StoredTrace{} }

// Get, Set and Keys make *StoredTrace a propagation.TextMapCarrier of the
// two W3C trace-context headers; any other key is ignored.
func (t *StoredTrace) Get(key string) string {
	switch key {
	case HeaderTraceparent:
		return t.Traceparent
	case HeaderTracestate:
		return t.Tracestate
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (t *StoredTrace) Set(key, value string) {
	switch key {
	case HeaderTraceparent:
		t.Traceparent = value
	case HeaderTracestate:
		t.Tracestate = value
	}
}

// Keys implements propagation.TextMapCarrier.
func (t *StoredTrace) Keys() []string { return []string{HeaderTraceparent, HeaderTracestate} }

// TraceCarrier returns ctx's trace context for an entity to keep with its
// state (see StoredTrace); the zero StoredTrace when ctx has no trace.
func TraceCarrier(ctx context.Context) StoredTrace {
	var t StoredTrace
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, &t)
	}
	return t
}

// ContinueTrace returns ctx under which the next message published
// (Publish, PublishEvent) is a child of the stored trace context (from
// TraceCarrier) rather than of ctx's span, with a span link to ctx's span.
//
// This is how an entity's later events stay in the trace of the request that
// created it: billing keeps the order's trace context with the invoice, and
// invoice.paid, published while serving the separate pay request, lands in
// the order's trace, linked to the pay request's trace. With no usable stored
// context ctx is returned unchanged.
func ContinueTrace(ctx context.Context, stored StoredTrace) context.Context {
	if stored.Traceparent == "" {
		return ctx
	}
	parent := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), &stored))
	if !parent.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, continuedTraceKey{}, continuedTrace{parent: parent, now: trace.SpanContextFromContext(ctx)})
}

// producerContext is the parent a producer span starts under: the stored
// trace of ContinueTrace (linked to the current span) or ctx itself.
func producerContext(ctx context.Context) (context.Context, []trace.SpanStartOption) {
	st, ok := ctx.Value(continuedTraceKey{}).(continuedTrace)
	if !ok {
		return ctx, nil
	}
	var opts []trace.SpanStartOption
	if st.now.IsValid() && st.now.TraceID() != st.parent.TraceID() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: st.now,
			Attributes: []attribute.KeyValue{attribute.String("authmesh.link", "caused_by")}}))
	}
	return trace.ContextWithRemoteSpanContext(ctx, st.parent), opts
}

// RecordID notes on ctx's span — the request's HTTP server span, a NATS
// server or consumer span — the id of an entity it acts on under key
// (events.AttrOrderID, events.AttrInvoiceID), so that its trace can be found
// by it (make trace ORDER=<id>). Only random ids of things, never of people:
// a value that is not an authz.PlainID (a subject, an email, a token) is not
// recorded. It does nothing when the span is not recording.
func RecordID(ctx context.Context, key attribute.Key, id string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() && authz.PlainID(id) {
		span.SetAttributes(key.String(id))
	}
}

// eventType is the "<type>" of a Nats-Msg-Id "<type>:<entity id>": the id
// itself is not recorded, since an entity id may be a person's subject
// (users' events are keyed by it).
func eventType(msgID string) attribute.KeyValue {
	typ, _, _ := strings.Cut(msgID, ":")
	return attrEventType.String(typ)
}
