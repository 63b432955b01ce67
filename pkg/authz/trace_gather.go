package authz

import (
	"context"
	"slices"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// GatherAttributes returns span wrapped, and ctx holding the wrapper as its
// span, so that the attributes recorded on it while it runs reach the span
// in one SetAttributes call, at End. It is for the spans that collect many
// attributes in many calls: a server or consumer span gets its messaging or
// HTTP attributes, then the key lookup, the decision (RecordDecision), the
// entity ids and the result, a few at a time. The SDK grows a span's
// attribute slice on every call that does not fit, doubling it (1.4 KB of
// slices for BenchmarkDecisionSpan's 13 attributes in six calls); handed
// over at once they take one allocation of their own size.
//
// Everything else (SpanContext, IsRecording, SetStatus, AddEvent, SetName,
// ...) goes to span as it comes, and what the SDK keeps of the attributes is
// the same: it de-duplicates them at End, the last value of a key winning,
// as it does for separate calls. The wrapper is safe for concurrent use; a
// SetAttributes after End goes to span (which ignores it). One difference:
// the SDK notes a panic on a span only when its own End is the deferred
// call, so do not rely on that for a wrapped span.
//
// A span that does not record (tracing off, not sampled) is returned as it
// is, with ctx unchanged: nothing is allocated for it.
func GatherAttributes(ctx context.Context, span trace.Span) (context.Context, trace.Span) {
	if !span.IsRecording() {
		return ctx, span
	}
	g := &gatheringSpan{Span: span}
	return trace.ContextWithSpan(ctx, g), g
}

type gatheringSpan struct {
	trace.Span

	mu    sync.Mutex
	buf   *attrBuf // nil until the first attribute, and again after End
	ended bool
}

// attrBuf is a buffer for a span's attributes while it runs. The SDK
// copies them at End, so the buffer goes back to attrBufs for the next span.
type attrBuf struct{ kvs []attribute.KeyValue }

// maxPooledAttrs bounds the buffers attrBufs keeps: a span with a great many
// attributes does not leave its large buffer to the next.
const maxPooledAttrs = 64

var attrBufs = sync.Pool{New: func() any { return &attrBuf{kvs: make([]attribute.KeyValue, 0, 24)} }}

// SetSpanAttributes sets attrs on span as span.SetAttributes(attrs...)
// does, without keeping attrs: on a span of GatherAttributes they are copied
// into its buffer, so a caller's array on the stack stays there (a slice
// passed to an interface's SetAttributes always goes to the heap).
func SetSpanAttributes(span trace.Span, attrs []attribute.KeyValue) {
	if g, ok := span.(*gatheringSpan); ok && g.gather(attrs) {
		return
	}
	span.SetAttributes(slices.Clone(attrs)...)
}

func (s *gatheringSpan) SetAttributes(kv ...attribute.KeyValue) {
	if !s.gather(kv) {
		s.Span.SetAttributes(kv...)
	}
}

// gather copies kv into the buffer, or reports false once the span ended.
func (s *gatheringSpan) gather(kv []attribute.KeyValue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	if s.buf == nil {
		s.buf = attrBufs.Get().(*attrBuf)
	}
	s.buf.kvs = append(s.buf.kvs, kv...)
	return true
}

func (s *gatheringSpan) End(options ...trace.SpanEndOption) {
	s.mu.Lock()
	buf := s.buf
	s.buf, s.ended = nil, true
	s.mu.Unlock()
	if buf != nil {
		s.Span.SetAttributes(buf.kvs...)
		clear(buf.kvs) // no strings kept alive by the pool
		if cap(buf.kvs) <= maxPooledAttrs {
			buf.kvs = buf.kvs[:0]
			attrBufs.Put(buf)
		}
	}
	s.Span.End(options...)
}
