package telemetry_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/authmesh/authmesh/pkg/platform/telemetry"
	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
)

// processCPU is the CPU time this process has used: the export runs on the
// batch processor's goroutine, so ns/op alone would miss it.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// orderTrace starts and ends spans shaped like one order's in one service:
// a server span with its decision, and eleven children with the attribute
// counts of KV writes and messaging spans.
func orderTrace(tr trace.Tracer) {
	ctx, root := tr.Start(context.Background(), "POST /v1/orders", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", "POST"), attribute.String("http.route", "/v1/orders"),
			attribute.String("url.scheme", "http")))
	kv := []attribute.KeyValue{attribute.String("db.system.name", "nats_kv"), attribute.String("db.namespace", "orders"),
		attribute.String("db.operation.name", "put")}
	for i := range 11 {
		_, s := tr.Start(ctx, "kv put orders", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kv...))
		s.SetAttributes(attribute.Int64("kv.revision", int64(i)))
		s.End()
	}
	root.SetAttributes(attribute.Int("http.response.status_code", 201), attribute.String("authz.decision", "allowed"),
		attribute.String("authz.policy", "create:orders"), attribute.String("authz.sub_hash", "0123456789abcdef"),
		attribute.String("authz.kid", "dev-1"), attribute.Bool("authz.key_cache_hit", true))
	root.End()
}

// BenchmarkOrderTrace is the CPU one order's twelve spans cost a service:
// off (the no-op tracer, as with no endpoint) against on (recorded, batched
// and exported over OTLP/HTTP to oteltest's sink). cpu-µs/op counts the
// process's CPU, the batch processor's export included; the sink's own share
// is small (it counts spans without decoding them).
func BenchmarkOrderTrace(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			rcv := oteltest.Start()
			defer rcv.Close()
			rcv.Discard = true
			cfg := telemetry.Config{ServiceName: "bench", Sampler: "parentbased_always_on", Ratio: 1}
			if on {
				cfg.Endpoint = rcv.Endpoint() + "/v1/traces"
			}
			stop, err := telemetry.Start(context.Background(), cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer otel.SetTracerProvider(noop.NewTracerProvider())
			// Flush every 40 orders (480 spans, about the default batch of
			// 512) so the default queue never drops: every span is exported.
			flush := func() {}
			if tp, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
				flush = func() { _ = tp.ForceFlush(context.Background()) }
			}
			tr := otel.Tracer("bench")
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				orderTrace(tr)
				if i%40 == 39 {
					flush()
				}
			}
			if err := stop(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			if on && rcv.Count() != int64(12*b.N) {
				b.Fatalf("%d spans exported, want %d", rcv.Count(), 12*b.N)
			}
		})
	}
}

// BenchmarkSpanAttributes is what an attribute costs: twelve spans with 0,
// 4 or 8 string attributes each, recorded, batched and exported over
// OTLP/HTTP to oteltest's sink, with the exporter's default (no compression)
// and with gzip. The difference per attribute (cpu-µs/op between two rows
// divided by 48) is the figure the span code's comments quote, about 0.6 µs
// (1.5 µs through the SDK's own exporter, before export.go): most of it is
// now the SDK's span bookkeeping (the attribute slice it grows, the map it
// de-duplicates keys with at End).
func BenchmarkSpanAttributes(b *testing.B) {
	for _, gzip := range []bool{false, true} {
		for _, n := range []int{0, 4, 8} {
			name := fmt.Sprintf("plain/attrs-%d", n)
			if gzip {
				name = fmt.Sprintf("gzip/attrs-%d", n)
			}
			b.Run(name, func(b *testing.B) {
				rcv := oteltest.Start()
				defer rcv.Close()
				rcv.Discard = true
				if gzip {
					b.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
				}
				stop, err := telemetry.Start(context.Background(), telemetry.Config{ServiceName: "bench",
					Endpoint: rcv.Endpoint() + "/v1/traces", Sampler: "parentbased_always_on", Ratio: 1}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer otel.SetTracerProvider(noop.NewTracerProvider())
				tp := otel.GetTracerProvider().(*sdktrace.TracerProvider)
				tr := otel.Tracer("bench")
				attrs := make([]attribute.KeyValue, n)
				for i := range attrs {
					attrs[i] = attribute.String(fmt.Sprintf("bench.attr_%d", i), "nats_kv")
				}
				b.ReportAllocs()
				cpu0 := processCPU()
				for i := 0; b.Loop(); i++ {
					ctx, root := tr.Start(context.Background(), "POST /v1/orders", trace.WithAttributes(attrs...))
					for range 11 {
						_, s := tr.Start(ctx, "kv put orders", trace.WithAttributes(attrs...))
						s.End()
					}
					root.End()
					if i%40 == 39 {
						_ = tp.ForceFlush(context.Background())
					}
				}
				if err := stop(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}
