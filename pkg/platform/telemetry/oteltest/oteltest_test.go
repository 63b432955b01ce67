package oteltest_test

import (
	"bytes"
	"net/http"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
)

// export builds an ExportTraceServiceRequest of two resources, with scopes
// holding 3+0 and 2 spans: 5 in all, with attributes and a resource in
// between for the sink to skip.
func export(t *testing.T) []byte {
	t.Helper()
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	span := func(name string) *tracepb.Span {
		return &tracepb.Span{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), Name: name,
			Attributes: []*commonpb.KeyValue{str("authz.decision", "allowed")}}
	}
	res := func(svc string) *resourcepb.Resource {
		return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", svc)}}
	}
	b, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: res("orders"), ScopeSpans: []*tracepb.ScopeSpans{
			{Scope: &commonpb.InstrumentationScope{Name: "a"}, Spans: []*tracepb.Span{span("x"), span("y"), span("z")}},
			{Scope: &commonpb.InstrumentationScope{Name: "b"}},
		}},
		{Resource: res("billing"), ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span("p"), span("q")}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, r *oteltest.Receiver, body []byte) int {
	t.Helper()
	resp, err := http.Post(r.Endpoint()+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDiscardCounts: the sink counts what the decoding receiver decodes, and
// refuses what it refuses.
func TestDiscardCounts(t *testing.T) {
	t.Parallel()
	body := export(t)
	for _, discard := range []bool{false, true} {
		r := oteltest.Start()
		defer r.Close()
		r.Discard = discard
		for range 2 {
			if code := post(t, r, body); code != http.StatusOK {
				t.Fatalf("discard %v: status %d", discard, code)
			}
		}
		if r.Count() != 10 || r.Requests() != 2 {
			t.Errorf("discard %v: %d spans in %d requests, want 10 in 2", discard, r.Count(), r.Requests())
		}
		if got := len(r.Spans()); discard && got != 0 || !discard && got != 10 {
			t.Errorf("discard %v: kept %d spans", discard, got)
		}
		for _, bad := range [][]byte{body[:len(body)-3], {0x0a, 0x05, 0x12}, {0xff}} {
			if code := post(t, r, bad); code != http.StatusBadRequest {
				t.Errorf("discard %v: malformed %x answered %d", discard, bad, code)
			}
		}
		if r.Count() != 10 || r.Requests() != 2 {
			t.Errorf("discard %v: malformed requests counted: %d spans in %d requests", discard, r.Count(), r.Requests())
		}
	}
}
