package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/platform/telemetry"
	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	t.Parallel()
	ok := []struct {
		name string
		env  map[string]string
		want telemetry.Config
	}{
		{"nothing set is off", nil, telemetry.Config{ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1}},
		{"base endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
			telemetry.Config{Endpoint: "http://collector:4318/v1/traces", ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1}},
		{"traces endpoint wins, as is", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/x"},
			telemetry.Config{Endpoint: "https://b/x", ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1}},
		{"disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "TRUE"},
			telemetry.Config{ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1}},
		{"sampler and ratio", map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			telemetry.Config{ServiceName: "orders", Sampler: "parentbased_traceidratio", Ratio: 0.25}},
		{"json", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			telemetry.Config{ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1, JSON: true}},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
			telemetry.Config{ServiceName: "orders", Sampler: "parentbased_always_on", Ratio: 1}},
	}
	for _, tc := range ok {
		got, err := telemetry.Parse("orders", env(tc.env))
		if err != nil || got.Endpoint != tc.want.Endpoint || got.ServiceName != tc.want.ServiceName ||
			got.Sampler != tc.want.Sampler || got.Ratio != tc.want.Ratio || got.JSON != tc.want.JSON {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	t.Run("service name: variable, then resource, then default", func(t *testing.T) {
		got, err := telemetry.Parse("orders", env(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=shop,deployment.environment.name=dev%20eu"}))
		if err != nil || got.ServiceName != "shop" || len(got.Resource) != 2 || got.Resource[1].Value.AsString() != "dev eu" {
			t.Fatalf("%+v %v", got, err)
		}
		got, _ = telemetry.Parse("orders", env(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=shop", "OTEL_SERVICE_NAME": "svc"}))
		if got.ServiceName != "svc" {
			t.Fatalf("service name %q", got.ServiceName)
		}
	})
	bad := map[string]map[string]string{
		"OTEL_TRACES_SAMPLER":                {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
		"OTEL_TRACES_SAMPLER_ARG":            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
		"OTEL_SDK_DISABLED":                  {"OTEL_SDK_DISABLED": "yes"},
		"OTEL_RESOURCE_ATTRIBUTES":           {"OTEL_RESOURCE_ATTRIBUTES": "just-a-word"},
		"OTEL_EXPORTER_OTLP_ENDPOINT":        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://collector:4317"},
		"OTEL_EXPORTER_OTLP_PROTOCOL":        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/xml"},
	}
	for what, e := range bad {
		if _, err := telemetry.Parse("orders", env(e)); err == nil || !strings.Contains(err.Error(), strings.Fields(what)[0]) {
			t.Errorf("%v: error %v, want one naming %s", e, err, what)
		}
	}
}

// TestStartExportsToReceiver: with an endpoint, spans reach an OTLP/HTTP
// receiver with the service's resource, and Shutdown flushes them.
func TestStartExportsToReceiver(t *testing.T) {
	rcv := oteltest.Start()
	defer rcv.Close()
	cfg, err := telemetry.Parse("billing", env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(), "OTEL_RESOURCE_ATTRIBUTES": "team=payments"}))
	if err != nil {
		t.Fatal(err)
	}
	shutdown, err := telemetry.Start(context.Background(), cfg, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "work")
	id := span.SpanContext().TraceID().String()
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	spans, err := rcv.Wait(ctx, func(s []oteltest.Span) bool { return len(oteltest.Trace(s, id)) == 1 })
	if err != nil {
		t.Fatalf("%v; got %v", err, spans)
	}
	s := oteltest.Trace(spans, id)[0]
	if s.Name != "work" || s.Service != "billing" || s.Resource["team"] != "payments" || s.Kind != "internal" {
		t.Fatalf("span %+v", s)
	}
}

func TestLogHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "users")
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	log.InfoContext(ctx, "in a request")
	log.Info("outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var in, out map[string]any
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &in) != nil || json.Unmarshal([]byte(lines[1]), &out) != nil {
		t.Fatalf("log %q", buf.String())
	}
	if in["trace_id"] != tid.String() || in["span_id"] != sid.String() || in["service"] != "users" {
		t.Errorf("line in a request: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("line outside a request: %v", out)
	}
}
