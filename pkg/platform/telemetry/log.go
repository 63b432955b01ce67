package telemetry

import (
	"context"
	"encoding/hex"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps h so that every record logged with a context that holds
// a span (the request's, the message's) carries trace_id and span_id: a log
// line leads to its trace. Records without one pass through unchanged.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(traceHandler); ok {
		return h
	}
	return traceHandler{h}
}

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			// Both ids in one string: one allocation per line, not two.
			var b [2*len(trace.TraceID{}) + 2*len(trace.SpanID{})]byte
			tid, sid := sc.TraceID(), sc.SpanID()
			n := hex.Encode(b[:], tid[:])
			hex.Encode(b[n:], sid[:])
			ids := string(b[:])
			r = r.Clone()
			r.AddAttrs(slog.String("trace_id", ids[:n]), slog.String("span_id", ids[n:]))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
