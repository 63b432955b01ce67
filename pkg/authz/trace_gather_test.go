package authz_test

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/authmesh/authmesh/pkg/authz"
)

// decisionSpan records what a receiver's span gets, call by call: its
// messaging attributes, the endpoint, the key lookup, an entity id, the
// decision and the result (13 attributes, one key twice). Gathered, the
// key lookup and the decision go through SetSpanAttributes, as
// RecordDecision's do; direct, every call is span.SetAttributes, as all
// were before GatherAttributes.
func decisionSpan(ctx context.Context, tr trace.Tracer, gather bool) {
	ctx, span := tr.Start(ctx, "process authmesh.users.profile", trace.WithSpanKind(trace.SpanKindServer))
	if gather {
		ctx, span = authz.GatherAttributes(ctx, span)
	}
	span.SetAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", "authmesh.users.profile"),
		attribute.String("messaging.operation.name", "process"))
	span.SetAttributes(attribute.String("authmesh.endpoint", "profile"))
	lookup := trace.SpanFromContext(ctx)
	if gather {
		authz.SetSpanAttributes(lookup, []attribute.KeyValue{authz.AttrKeyID.String("dev-1"), authz.AttrKeyCacheHit.Bool(true)})
	} else {
		lookup.SetAttributes(authz.AttrKeyID.String("dev-1"), authz.AttrKeyCacheHit.Bool(true))
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("authmesh.order_id", "ord_0123456789"))
	if gather {
		authz.SetSpanAttributes(trace.SpanFromContext(ctx), []attribute.KeyValue{authz.AttrPolicy.String("read:profile"),
			authz.AttrSubjectHash.String("0123456789abcdef"), authz.AttrKeyID.String("dev-1"), authz.AttrClient.String("orders-service"),
			authz.AttrDecision.String("allowed")})
	} else {
		trace.SpanFromContext(ctx).SetAttributes(authz.AttrPolicy.String("read:profile"),
			authz.AttrSubjectHash.String("0123456789abcdef"), authz.AttrKeyID.String("dev-1"), authz.AttrClient.String("orders-service"),
			authz.AttrDecision.String("allowed"))
	}
	span.SetAttributes(attribute.String("authmesh.result", "ok"))
	span.End()
}

func recorder() (*tracetest.InMemoryExporter, trace.Tracer, func()) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	return exp, tp.Tracer("test"), func() { _ = tp.Shutdown(context.Background()) }
}

// TestGatherAttributesRecordsTheSame: a gathered span reaches the exporter
// with the attributes, name, status and events of one recorded call by
// call, and a span started under the gathered one is its child.
func TestGatherAttributesRecordsTheSame(t *testing.T) {
	exp, tr, stop := recorder()
	defer stop()
	decisionSpan(t.Context(), tr, false)
	decisionSpan(t.Context(), tr, true)

	ctx, span := tr.Start(t.Context(), "parent")
	ctx, span = authz.GatherAttributes(ctx, span)
	span.SetAttributes(attribute.Int("n", 1))
	span.SetStatus(codes.Error, "failed")
	span.AddEvent("authz.revocation_hit")
	_, child := tr.Start(ctx, "child")
	child.End()
	span.SetAttributes(attribute.Int("n", 2))
	span.End()
	span.SetAttributes(attribute.Int("late", 1)) // after End: dropped, as by the SDK

	got := exp.GetSpans()
	if len(got) != 4 {
		t.Fatalf("recorded %d spans, want 4", len(got))
	}
	direct, gathered := got[0], got[1]
	if len(direct.Attributes) != 12 {
		t.Fatalf("direct span has %d attributes, want 12 (13 set, one key twice): %v", len(direct.Attributes), direct.Attributes)
	}
	want := attribute.NewSet(direct.Attributes...)
	if have := attribute.NewSet(gathered.Attributes...); !have.Equals(&want) {
		t.Errorf("gathered attributes\n %v\nwant\n %v", have.ToSlice(), want.ToSlice())
	}
	kid, parent := got[2], got[3]
	if kid.Parent.SpanID() != parent.SpanContext.SpanID() {
		t.Errorf("child's parent %s, want the gathered span %s", kid.Parent.SpanID(), parent.SpanContext.SpanID())
	}
	set := attribute.NewSet(parent.Attributes...)
	if v, _ := set.Value("n"); v.AsInt64() != 2 || len(parent.Attributes) != 1 {
		t.Errorf("parent attributes %v, want only n=2 (the last value, nothing after End)", parent.Attributes)
	}
	if parent.Status.Code != codes.Error || len(parent.Events) != 1 {
		t.Errorf("parent status %v, events %v: want Error and the event", parent.Status, parent.Events)
	}
}

// TestGatherAttributesConcurrent: attributes set from several goroutines
// while the span runs all arrive (run with -race).
func TestGatherAttributesConcurrent(t *testing.T) {
	exp, tr, stop := recorder()
	defer stop()
	ctx, span := tr.Start(t.Context(), "concurrent")
	_, span = authz.GatherAttributes(ctx, span)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { span.SetAttributes(attribute.Int(string(rune('a'+i)), i)) })
	}
	wg.Wait()
	span.End()
	if got := exp.GetSpans(); len(got) != 1 || len(got[0].Attributes) != 8 {
		t.Fatalf("spans %v: want one with 8 attributes", got)
	}
}

// TestGatherAttributesNotRecording: a span that does not record comes back
// as it is, ctx unchanged.
func TestGatherAttributesNotRecording(t *testing.T) {
	ctx, span := noop.NewTracerProvider().Tracer("off").Start(t.Context(), "off")
	gctx, g := authz.GatherAttributes(ctx, span)
	if _, same := g.(noop.Span); gctx != ctx || !same {
		t.Error("a span that does not record was wrapped")
	}
}

// BenchmarkDecisionSpan is one receiver's span recorded call by call
// (direct) against gathered and set at End (gathered), to the SDK with a
// processor that drops what it is given.
func BenchmarkDecisionSpan(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(dropProcessor{}))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := tp.Tracer("bench")
	for _, gather := range []bool{false, true} {
		name := "direct"
		if gather {
			name = "gathered"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				decisionSpan(context.Background(), tr, gather)
			}
		})
	}
}

type dropProcessor struct{}

func (dropProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropProcessor) Shutdown(context.Context) error                  { return nil }
func (dropProcessor) ForceFlush(context.Context) error                { return nil }
