package telemetry

import (
	"context"
	"fmt"
	"math"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// exporter is otlptrace.Exporter with its own OTLP encoding. The SDK's
// exporter converts every batch into a fresh tree of protobuf messages
// (four objects per attribute, a dozen per span) and then marshals that
// tree through protobuf's reflection: in a service at 100 % sampling the two
// were most of what tracing cost it beyond the spans themselves (issue 16's
// profiles). This one appends the spans' wire encoding straight into one
// buffer it keeps, with protowire. Everything else stays the SDK's: the
// client (otlptracehttp: the OTEL_EXPORTER_OTLP_* variables, retries,
// compression, TLS) sends it, and the batch processor feeds it.
//
// The client takes messages, not bytes, so each resource's encoding is
// handed over as the unknown fields of an otherwise empty ResourceSpans:
// protobuf writes unknown fields back out as they are, so the request on
// the wire is byte for byte a normal one. TestExporterSendsWhatTheSDKSends
// decodes what both exporters send and requires the same messages. (The
// client's experimental self-observability metrics, off unless
// OTEL_GO_X_OBSERVABILITY is set, count spans in the messages, so they would
// count none.)
type exporter struct {
	client otlptrace.Client

	mu      sync.Mutex // ExportSpans against itself and Shutdown
	enc     encoder
	stopped bool
}

// newExporter starts client and returns the exporter that uploads with it.
func newExporter(ctx context.Context, client otlptrace.Client) (*exporter, error) {
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return &exporter{client: client}, nil
}

// ExportSpans encodes spans and uploads them. The client has copied the
// encoding into its request body by the time UploadTraces returns, so the
// buffer is free for the next batch then.
func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil
	}
	rs := e.enc.encode(spans)
	if len(rs) == 0 {
		return nil
	}
	if err := e.client.UploadTraces(ctx, rs); err != nil {
		return fmt.Errorf("traces export: %w", err)
	}
	return nil
}

// Shutdown stops the client; later exports do nothing.
func (e *exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil
	}
	e.stopped = true
	return e.client.Stop(ctx)
}

// encoder writes a batch of spans in the OTLP trace encoding
// (opentelemetry/proto/trace/v1/trace.proto), field for field what the SDK's
// conversion fills in. Resources and scopes are encoded once and kept (they
// do not change for a provider's life).
type encoder struct {
	buf       []byte
	groups    []group
	member    []int  // each span's group, -1 for a nil span
	done      []bool // groups written
	ends      []int  // where each resource's encoding ends in buf
	msgs      []*tracepb.ResourceSpans
	resources map[attribute.Distinct][]byte // Resource messages' bodies
	scopes    map[instrumentation.Scope][]byte
}

// maxKeptBuffer bounds the buffer kept between batches: a default batch of
// 512 spans takes about 150 KiB.
const maxKeptBuffer = 4 << 20

// group is the spans of one resource and instrumentation scope.
type group struct {
	res   *resource.Resource
	key   attribute.Distinct
	scope instrumentation.Scope
}

// OTLP field numbers (trace.proto, common.proto, resource.proto).
const (
	fResourceSpansResource, fResourceSpansScopeSpans, fResourceSpansSchemaURL = 1, 2, 3
	fScopeSpansScope, fScopeSpansSpans, fScopeSpansSchemaURL                  = 1, 2, 3
	fScopeName, fScopeVersion, fScopeAttributes                               = 1, 2, 3
	fResourceAttributes                                                       = 1

	fSpanTraceID, fSpanSpanID, fSpanTraceState, fSpanParentSpanID  = 1, 2, 3, 4
	fSpanName, fSpanKind, fSpanStart, fSpanEnd                     = 5, 6, 7, 8
	fSpanAttributes, fSpanDroppedAttributes                        = 9, 10
	fSpanEvents, fSpanDroppedEvents, fSpanLinks, fSpanDroppedLinks = 11, 12, 13, 14
	fSpanStatus, fSpanFlags                                        = 15, 16
	fStatusMessage, fStatusCode                                    = 2, 3
	fEventTime, fEventName, fEventAttributes, fEventDropped        = 1, 2, 3, 4
	fLinkTraceID, fLinkSpanID, fLinkAttributes, fLinkDropped       = 1, 2, 4, 5
	fLinkFlags                                                     = 6

	fKeyValueKey, fKeyValueValue                                   = 1, 2
	fValueString, fValueBool, fValueInt, fValueDouble, fValueArray = 1, 2, 3, 4, 5
	fValueKVList, fValueBytes                                      = 6, 7
	fListValues                                                    = 1 // ArrayValue's and KeyValueList's
)

// encode returns the batch as ResourceSpans, one per resource in the order
// they first appear, each carrying its encoding as unknown fields; within
// one, the scopes in the order they first appear and the spans in batch
// order. The result is valid until the next call.
func (e *encoder) encode(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	e.groups = e.groups[:0]
	e.member = e.member[:0]
	for _, s := range spans {
		e.member = append(e.member, e.groupOf(s))
	}
	if len(e.groups) == 0 {
		return nil
	}
	if cap(e.buf) > maxKeptBuffer {
		e.buf = nil // an outsized batch's buffer is not kept for ever
	}
	b := e.buf[:0]
	e.ends = e.ends[:0]
	e.done = append(e.done[:0], make([]bool, len(e.groups))...)
	for i, g := range e.groups {
		if e.done[i] {
			continue
		}
		if g.res != nil {
			b = appendMessage(b, fResourceSpansResource, e.resource(g.res, g.key))
		}
		for j := i; j < len(e.groups); j++ {
			if !e.done[j] && e.groups[j].key == g.key {
				e.done[j] = true
				b = e.appendScopeSpans(b, spans, j)
			}
		}
		b = appendString(b, fResourceSpansSchemaURL, g.res.SchemaURL())
		e.ends = append(e.ends, len(b))
	}
	e.buf = b
	for len(e.msgs) < len(e.ends) {
		e.msgs = append(e.msgs, new(tracepb.ResourceSpans))
	}
	start := 0
	for i, end := range e.ends {
		proto.Reset(e.msgs[i])
		e.msgs[i].ProtoReflect().SetUnknown(protoreflect.RawFields(b[start:end:end]))
		start = end
	}
	return e.msgs[:len(e.ends)]
}

// groupOf is the index of s's group, added if new (-1 for nil). A provider
// has one resource and a handful of scopes: a linear search beats a map.
func (e *encoder) groupOf(s sdktrace.ReadOnlySpan) int {
	if s == nil {
		return -1
	}
	res, scope := s.Resource(), s.InstrumentationScope()
	key := res.Equivalent()
	for i, g := range e.groups {
		if g.key == key && g.scope == scope {
			return i
		}
	}
	e.groups = append(e.groups, group{res: res, key: key, scope: scope})
	return len(e.groups) - 1
}

func (e *encoder) appendScopeSpans(b []byte, spans []sdktrace.ReadOnlySpan, gi int) []byte {
	g := e.groups[gi]
	b, at := openMessage(b, fResourceSpansScopeSpans)
	if g.scope != (instrumentation.Scope{}) {
		b = appendMessage(b, fScopeSpansScope, e.scope(g.scope))
	}
	for i, s := range spans {
		if e.member[i] == gi {
			b = appendSpan(b, s)
		}
	}
	b = appendString(b, fScopeSpansSchemaURL, g.scope.SchemaURL)
	return closeMessage(b, at)
}

func (e *encoder) resource(r *resource.Resource, key attribute.Distinct) []byte {
	if enc, ok := e.resources[key]; ok {
		return enc
	}
	if e.resources == nil || len(e.resources) >= 8 {
		e.resources = map[attribute.Distinct][]byte{}
	}
	enc := appendKeyValues(nil, fResourceAttributes, r.Attributes())
	e.resources[key] = enc
	return enc
}

func (e *encoder) scope(s instrumentation.Scope) []byte {
	if enc, ok := e.scopes[s]; ok {
		return enc
	}
	if e.scopes == nil || len(e.scopes) >= 64 {
		e.scopes = map[instrumentation.Scope][]byte{}
	}
	enc := appendString(nil, fScopeName, s.Name)
	enc = appendString(enc, fScopeVersion, s.Version)
	enc = appendKeyValues(enc, fScopeAttributes, s.Attributes.ToSlice())
	e.scopes[s] = enc
	return enc
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc, parent := s.SpanContext(), s.Parent()
	b, at := openMessage(b, fScopeSpansSpans)
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, fSpanTraceID, tid[:])
	b = appendBytes(b, fSpanSpanID, sid[:])
	b = appendString(b, fSpanTraceState, sc.TraceState().String())
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendBytes(b, fSpanParentSpanID, psid[:])
	}
	b = appendString(b, fSpanName, s.Name())
	b = appendVarint(b, fSpanKind, uint64(spanKind(s.SpanKind())))
	b = appendFixed64(b, fSpanStart, unixNano(s.StartTime().UnixNano()))
	b = appendFixed64(b, fSpanEnd, unixNano(s.EndTime().UnixNano()))
	b = appendKeyValues(b, fSpanAttributes, s.Attributes())
	b = appendVarint(b, fSpanDroppedAttributes, uint64(clampUint32(s.DroppedAttributes())))
	for _, ev := range s.Events() {
		var e int
		b, e = openMessage(b, fSpanEvents)
		b = appendFixed64(b, fEventTime, unixNano(ev.Time.UnixNano()))
		b = appendString(b, fEventName, ev.Name)
		b = appendKeyValues(b, fEventAttributes, ev.Attributes)
		b = appendVarint(b, fEventDropped, uint64(clampUint32(ev.DroppedAttributeCount)))
		b = closeMessage(b, e)
	}
	b = appendVarint(b, fSpanDroppedEvents, uint64(clampUint32(s.DroppedEvents())))
	for _, l := range s.Links() {
		var e int
		b, e = openMessage(b, fSpanLinks)
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		b = appendBytes(b, fLinkTraceID, ltid[:])
		b = appendBytes(b, fLinkSpanID, lsid[:])
		b = appendKeyValues(b, fLinkAttributes, l.Attributes)
		b = appendVarint(b, fLinkDropped, uint64(clampUint32(l.DroppedAttributeCount)))
		b = appendFixed32(b, fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		b = closeMessage(b, e)
	}
	b = appendVarint(b, fSpanDroppedLinks, uint64(clampUint32(s.DroppedLinks())))
	// The SDK always sends a status, empty or not.
	st := s.Status()
	b, e := openMessage(b, fSpanStatus)
	b = appendString(b, fStatusMessage, st.Description)
	b = appendVarint(b, fStatusCode, uint64(statusCode(st.Code)))
	b = closeMessage(b, e)
	b = appendFixed32(b, fSpanFlags, spanFlags(sc.TraceFlags(), parent))
	return closeMessage(b, at)
}

// appendKeyValues appends attrs as repeated KeyValue field num.
func appendKeyValues(b []byte, num protowire.Number, attrs []attribute.KeyValue) []byte {
	for _, a := range attrs {
		var at int
		b, at = openMessage(b, num)
		b = appendString(b, fKeyValueKey, string(a.Key))
		b = appendValue(b, fKeyValueValue, a.Value)
		b = closeMessage(b, at)
	}
	return b
}

// appendValue appends v as AnyValue field num: always present, as the SDK
// sends it, with its one member set even to a zero value (it is a oneof).
func appendValue(b []byte, num protowire.Number, v attribute.Value) []byte {
	b, at := openMessage(b, num)
	switch v.Type() {
	case attribute.STRING:
		b = protowire.AppendTag(b, fValueString, protowire.BytesType)
		b = protowire.AppendString(b, v.AsString())
	case attribute.BOOL:
		b = protowire.AppendTag(b, fValueBool, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, fValueInt, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, fValueDouble, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, fValueBytes, protowire.BytesType)
		b = protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		b = appendArray(b, v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		b = appendArray(b, v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		b = appendArray(b, v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		b = appendArray(b, v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		b = appendArray(b, v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		var list int
		b, list = openMessage(b, fValueKVList)
		b = appendKeyValues(b, fListValues, v.AsMap())
		b = closeMessage(b, list)
	case attribute.EMPTY:
	default:
		b = protowire.AppendTag(b, fValueString, protowire.BytesType)
		b = protowire.AppendString(b, "INVALID")
	}
	return closeMessage(b, at)
}

func appendArray[T any](b []byte, vs []T, value func(T) attribute.Value) []byte {
	b, at := openMessage(b, fValueArray)
	for _, v := range vs {
		b = appendValue(b, fListValues, value(v))
	}
	return closeMessage(b, at)
}

// openMessage appends the tag of the embedded message field num and one
// byte for its length, and returns where the message's body starts;
// closeMessage writes the length, moving the body on when it takes more
// than that byte.
func openMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return append(b, 0), len(b) + 1
}

func closeMessage(b []byte, at int) []byte {
	n := len(b) - at
	if n < 0x80 {
		b[at-1] = byte(n)
		return b
	}
	k := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, k-1)...)
	copy(b[at+k-1:], b[at:at+n])
	protowire.AppendVarint(b[:at-1], uint64(n))
	return b
}

// appendMessage appends the embedded message field num with the encoded
// body, present even when the body is empty.
func appendMessage(b []byte, num protowire.Number, body []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

// Scalar fields, left out at their zero value as proto3 encodes them.

func appendLen[T string | []byte](b []byte, num protowire.Number, v T) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendScalar(b []byte, num protowire.Number, typ protowire.Type, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, typ)
	switch typ {
	case protowire.Fixed64Type:
		return protowire.AppendFixed64(b, v)
	case protowire.Fixed32Type:
		return protowire.AppendFixed32(b, uint32(v))
	}
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte  { return appendLen(b, num, v) }
func appendString(b []byte, num protowire.Number, v string) []byte { return appendLen(b, num, v) }
func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	return appendScalar(b, num, protowire.VarintType, v)
}
func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	return appendScalar(b, num, protowire.Fixed64Type, v)
}
func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	return appendScalar(b, num, protowire.Fixed32Type, uint64(v))
}

func statusCode(c codes.Code) tracepb.Status_StatusCode {
	switch c {
	case codes.Ok:
		return tracepb.Status_STATUS_CODE_OK
	case codes.Error:
		return tracepb.Status_STATUS_CODE_ERROR
	}
	return tracepb.Status_STATUS_CODE_UNSET
}

// spanKind is k's OTLP kind: the API numbers kinds as OTLP does (internal
// 1 to consumer 5), which TestExporterSendsWhatTheSDKSends holds it to.
func spanKind(k trace.SpanKind) tracepb.Span_SpanKind {
	if k < trace.SpanKindInternal || k > trace.SpanKindConsumer {
		return tracepb.Span_SPAN_KIND_UNSPECIFIED
	}
	return tracepb.Span_SpanKind(k)
}

// spanFlags is the W3C trace flags in the low byte, and whether the parent
// (for a link: the linked span) is remote, known either way.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	flags := uint32(tf) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if parent.IsRemote() {
		flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	return flags
}

func unixNano(ns int64) uint64 { return uint64(max(0, ns)) }

func clampUint32(v int) uint32 {
	return uint32(min(max(v, 0), math.MaxUint32))
}
