package telemetry

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// exporter is otlptrace.Exporter with a conversion to protobuf that reuses
// its messages from one batch to the next. The SDK's exporter builds every
// batch anew, four objects per attribute and a dozen per span: in a service
// at 100 % sampling that was about a seventh of all it allocated (issue 16's
// profiles). Everything else stays the SDK's: the client (otlptracehttp,
// with the OTEL_EXPORTER_OTLP_* variables, retries, compression and TLS)
// marshals the messages, and the batch processor feeds it.
type exporter struct {
	client otlptrace.Client

	mu      sync.Mutex // ExportSpans against itself and Shutdown
	conv    converter
	stopped bool
}

// newExporter starts client and returns the exporter that uploads with it.
func newExporter(ctx context.Context, client otlptrace.Client) (*exporter, error) {
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return &exporter{client: client}, nil
}

// ExportSpans converts spans and uploads them. The client has marshalled
// the messages by the time UploadTraces returns, so they are free for the
// next batch then.
func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil
	}
	rs := e.conv.convert(spans)
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

// converter turns a batch of spans into OTLP messages, as the SDK's
// tracetransform does field for field, into arenas it keeps: each batch
// overwrites the previous one's messages whole. Resources and scopes are
// converted once and kept (they do not change for a provider's life).
type converter struct {
	resources map[attribute.Distinct]*resourcepb.Resource
	scopes    map[instrumentation.Scope]*commonpb.InstrumentationScope

	groups   []group
	member   []int // spans' group index
	rs       arena[tracepb.ResourceSpans]
	ss       arena[tracepb.ScopeSpans]
	spans    arena[tracepb.Span]
	statuses arena[tracepb.Status]
	events   arena[tracepb.Span_Event]
	links    arena[tracepb.Span_Link]
	kvs      arena[commonpb.KeyValue]
	values   arena[commonpb.AnyValue]
	strs     arena[commonpb.AnyValue_StringValue]
	ints     arena[commonpb.AnyValue_IntValue]
	bools    arena[commonpb.AnyValue_BoolValue]
	doubles  arena[commonpb.AnyValue_DoubleValue]
	spanPtrs arena[*tracepb.Span]
	evPtrs   arena[*tracepb.Span_Event]
	linkPtrs arena[*tracepb.Span_Link]
	kvPtrs   arena[*commonpb.KeyValue]
	ids      []byte // trace, span and parent ids, sliced per span and link
	rsPtrs   []*tracepb.ResourceSpans
}

// group is the spans of one resource and instrumentation scope.
type group struct {
	res   *resource.Resource
	key   attribute.Distinct
	scope instrumentation.Scope
	n     int // spans
	rs    int // index of its ResourceSpans
}

// arena is a reusable run of T: get hands out the next one, take the next n.
// grow is called with the batch's count before any get or take, so the
// backing array never moves while it is handed out.
type arena[T any] struct {
	items []T
	next  int
}

func (a *arena[T]) grow(n int) {
	if cap(a.items) < n {
		a.items = make([]T, n)
	}
	a.items = a.items[:cap(a.items)]
	a.next = 0
}

func (a *arena[T]) get() *T {
	a.next++
	return &a.items[a.next-1]
}

func (a *arena[T]) take(n int) []T {
	a.next += n
	return a.items[a.next-n : a.next : a.next]
}

// convert returns the batch as ResourceSpans, grouped by resource and then
// by scope in the order they first appear. The result and every message in
// it are valid until the next call.
func (c *converter) convert(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	c.groups = c.groups[:0]
	c.member = c.member[:0]
	var nSpans, nEvents, nLinks int
	var n counts
	for _, s := range spans {
		if s == nil {
			c.member = append(c.member, -1)
			continue
		}
		c.member = append(c.member, c.groupOf(s))
		nSpans++
		n.add(s.Attributes())
		for _, ev := range s.Events() {
			n.add(ev.Attributes)
		}
		for _, l := range s.Links() {
			n.add(l.Attributes)
		}
		nEvents += len(s.Events())
		nLinks += len(s.Links())
	}
	if nSpans == 0 {
		return nil
	}
	c.spans.grow(nSpans)
	c.statuses.grow(nSpans)
	c.events.grow(nEvents)
	c.links.grow(nLinks)
	c.kvs.grow(n.kvs)
	c.values.grow(n.kvs)
	c.strs.grow(n.strs)
	c.ints.grow(n.ints)
	c.bools.grow(n.bools)
	c.doubles.grow(n.doubles)
	c.ss.grow(len(c.groups))
	c.rs.grow(len(c.groups))
	c.spanPtrs.grow(nSpans)
	c.evPtrs.grow(nEvents)
	c.linkPtrs.grow(nLinks)
	c.kvPtrs.grow(n.kvs)
	c.ids = slices.Grow(c.ids[:0], 32*nSpans+24*nLinks)

	// Each group's spans take a contiguous run of spanPtrs, in batch order.
	scopeSpans := make([]*tracepb.ScopeSpans, len(c.groups))
	c.rsPtrs = c.rsPtrs[:0]
	for i := range c.groups {
		g := &c.groups[i]
		ss := c.ss.get()
		*ss = tracepb.ScopeSpans{
			Scope:     c.scope(g.scope),
			Spans:     c.spanPtrs.take(g.n)[:0],
			SchemaUrl: g.scope.SchemaURL,
		}
		scopeSpans[i] = ss
		g.rs = -1
		for j := range i {
			if c.groups[j].key == g.key {
				g.rs = c.groups[j].rs
				break
			}
		}
		if g.rs < 0 {
			rs := c.rs.get()
			*rs = tracepb.ResourceSpans{Resource: c.resource(g.res, g.key), SchemaUrl: g.res.SchemaURL()}
			g.rs = len(c.rsPtrs)
			c.rsPtrs = append(c.rsPtrs, rs)
		}
		c.rsPtrs[g.rs].ScopeSpans = append(c.rsPtrs[g.rs].ScopeSpans, ss)
	}
	for i, s := range spans {
		if gi := c.member[i]; gi >= 0 {
			scopeSpans[gi].Spans = append(scopeSpans[gi].Spans, c.span(s))
		}
	}
	return c.rsPtrs
}

// groupOf is the index of s's group, added if new. A provider has one
// resource and a handful of scopes: a linear search beats a map here.
func (c *converter) groupOf(s sdktrace.ReadOnlySpan) int {
	res, scope := s.Resource(), s.InstrumentationScope()
	key := res.Equivalent()
	for i := range c.groups {
		if g := &c.groups[i]; g.key == key && g.scope == scope {
			g.n++
			return i
		}
	}
	c.groups = append(c.groups, group{res: res, key: key, scope: scope, n: 1})
	return len(c.groups) - 1
}

func (c *converter) resource(r *resource.Resource, key attribute.Distinct) *resourcepb.Resource {
	if r == nil {
		return nil
	}
	if pb, ok := c.resources[key]; ok {
		return pb
	}
	if c.resources == nil || len(c.resources) >= 8 {
		c.resources = map[attribute.Distinct]*resourcepb.Resource{}
	}
	pb := &resourcepb.Resource{Attributes: newKeyValues(r.Attributes())}
	c.resources[key] = pb
	return pb
}

func (c *converter) scope(s instrumentation.Scope) *commonpb.InstrumentationScope {
	if s == (instrumentation.Scope{}) {
		return nil
	}
	if pb, ok := c.scopes[s]; ok {
		return pb
	}
	if c.scopes == nil || len(c.scopes) >= 64 {
		c.scopes = map[instrumentation.Scope]*commonpb.InstrumentationScope{}
	}
	pb := &commonpb.InstrumentationScope{Name: s.Name, Version: s.Version, Attributes: newKeyValues(s.Attributes.ToSlice())}
	c.scopes[s] = pb
	return pb
}

func (c *converter) span(s sdktrace.ReadOnlySpan) *tracepb.Span {
	sc, parent := s.SpanContext(), s.Parent()
	st := s.Status()
	status := c.statuses.get()
	*status = tracepb.Status{Code: statusCode(st.Code), Message: st.Description}
	pb := c.spans.get()
	*pb = tracepb.Span{
		TraceId:                c.traceID(sc.TraceID()),
		SpanId:                 c.spanID(sc.SpanID()),
		TraceState:             sc.TraceState().String(),
		Status:                 status,
		StartTimeUnixNano:      unixNano(s.StartTime().UnixNano()),
		EndTimeUnixNano:        unixNano(s.EndTime().UnixNano()),
		Links:                  c.spanLinks(s.Links()),
		Kind:                   spanKind(s.SpanKind()),
		Name:                   s.Name(),
		Attributes:             c.keyValues(s.Attributes()),
		Events:                 c.spanEvents(s.Events()),
		DroppedAttributesCount: clampUint32(s.DroppedAttributes()),
		DroppedEventsCount:     clampUint32(s.DroppedEvents()),
		DroppedLinksCount:      clampUint32(s.DroppedLinks()),
		Flags:                  spanFlags(sc.TraceFlags(), parent),
	}
	if psid := parent.SpanID(); psid.IsValid() {
		pb.ParentSpanId = c.spanID(psid)
	}
	return pb
}

func (c *converter) traceID(id trace.TraceID) []byte {
	c.ids = append(c.ids, id[:]...)
	return c.ids[len(c.ids)-len(id) : len(c.ids) : len(c.ids)]
}

func (c *converter) spanID(id trace.SpanID) []byte {
	c.ids = append(c.ids, id[:]...)
	return c.ids[len(c.ids)-len(id) : len(c.ids) : len(c.ids)]
}

func (c *converter) spanEvents(evs []sdktrace.Event) []*tracepb.Span_Event {
	return fill(&c.evPtrs, &c.events, len(evs), func(i int, ev *tracepb.Span_Event) {
		*ev = tracepb.Span_Event{
			Name:                   evs[i].Name,
			TimeUnixNano:           unixNano(evs[i].Time.UnixNano()),
			Attributes:             c.keyValues(evs[i].Attributes),
			DroppedAttributesCount: clampUint32(evs[i].DroppedAttributeCount),
		}
	})
}

func (c *converter) spanLinks(ls []sdktrace.Link) []*tracepb.Span_Link {
	return fill(&c.linkPtrs, &c.links, len(ls), func(i int, l *tracepb.Span_Link) {
		*l = tracepb.Span_Link{
			TraceId:                c.traceID(ls[i].SpanContext.TraceID()),
			SpanId:                 c.spanID(ls[i].SpanContext.SpanID()),
			Attributes:             c.keyValues(ls[i].Attributes),
			DroppedAttributesCount: clampUint32(ls[i].DroppedAttributeCount),
			Flags:                  spanFlags(ls[i].SpanContext.TraceFlags(), ls[i].SpanContext),
		}
	})
}

// fill takes n messages from items, has set write each, and returns
// pointers to them from ptrs (nil for none, as the SDK sends).
func fill[M any](ptrs *arena[*M], items *arena[M], n int, set func(i int, m *M)) []*M {
	if n == 0 {
		return nil
	}
	out := ptrs.take(n)
	for i := range out {
		out[i] = items.get()
		set(i, out[i])
	}
	return out
}

// keyValues converts attrs into the arenas; values of the slice and map
// kinds, rare in spans, are built as newValue does.
func (c *converter) keyValues(attrs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(attrs) == 0 {
		return nil
	}
	out := c.kvPtrs.take(len(attrs))
	for i, a := range attrs {
		v := c.values.get()
		*v = commonpb.AnyValue{}
		switch a.Value.Type() {
		case attribute.STRING:
			v.Value = put(&c.strs, commonpb.AnyValue_StringValue{StringValue: a.Value.AsString()})
		case attribute.INT64:
			v.Value = put(&c.ints, commonpb.AnyValue_IntValue{IntValue: a.Value.AsInt64()})
		case attribute.BOOL:
			v.Value = put(&c.bools, commonpb.AnyValue_BoolValue{BoolValue: a.Value.AsBool()})
		case attribute.FLOAT64:
			v.Value = put(&c.doubles, commonpb.AnyValue_DoubleValue{DoubleValue: a.Value.AsFloat64()})
		default:
			v.Value = newValue(a.Value).Value
		}
		kv := c.kvs.get()
		*kv = commonpb.KeyValue{Key: string(a.Key), Value: v}
		out[i] = kv
	}
	return out
}

// put stores m, a oneof wrapper (no lock inside), in the next of a.
func put[M any](a *arena[M], m M) *M {
	p := a.get()
	*p = m
	return p
}

// counts is how many of each message a batch's attributes take.
type counts struct{ kvs, strs, ints, bools, doubles int }

func (n *counts) add(attrs []attribute.KeyValue) {
	n.kvs += len(attrs)
	for _, a := range attrs {
		switch a.Value.Type() {
		case attribute.STRING:
			n.strs++
		case attribute.INT64:
			n.ints++
		case attribute.BOOL:
			n.bools++
		case attribute.FLOAT64:
			n.doubles++
		}
	}
}

// newKeyValues and newValue allocate, as the SDK's exporter does: for
// resources and scopes (converted once) and the rare slice and map values.
func newKeyValues(attrs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(attrs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, len(attrs))
	for i, a := range attrs {
		out[i] = &commonpb.KeyValue{Key: string(a.Key), Value: newValue(a.Value)}
	}
	return out
}

func newValue(v attribute.Value) *commonpb.AnyValue {
	av := new(commonpb.AnyValue)
	switch v.Type() {
	case attribute.BOOL:
		av.Value = &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}
	case attribute.INT64:
		av.Value = &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}
	case attribute.FLOAT64:
		av.Value = &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}
	case attribute.STRING:
		av.Value = &commonpb.AnyValue_StringValue{StringValue: v.AsString()}
	case attribute.BYTESLICE:
		av.Value = &commonpb.AnyValue_BytesValue{BytesValue: v.AsByteSlice()}
	case attribute.BOOLSLICE:
		av.Value = arrayValue(v.AsBoolSlice(), func(b bool) attribute.Value { return attribute.BoolValue(b) })
	case attribute.INT64SLICE:
		av.Value = arrayValue(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		av.Value = arrayValue(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		av.Value = arrayValue(v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		av.Value = arrayValue(v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		av.Value = &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: newKeyValues(v.AsMap())}}
	case attribute.EMPTY:
	default:
		av.Value = &commonpb.AnyValue_StringValue{StringValue: "INVALID"}
	}
	return av
}

func arrayValue[T any](vs []T, value func(T) attribute.Value) *commonpb.AnyValue_ArrayValue {
	out := make([]*commonpb.AnyValue, len(vs))
	for i, v := range vs {
		out[i] = newValue(value(v))
	}
	return &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: out}}
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
