package platform

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// TestBucketWriteSpans: each write is a span "kv <op> <bucket>" with its
// revision, a lost compare-and-set is kv.conflict and not an error, and a
// logical write (Write) is one span however many calls it makes. Not
// parallel: it installs the global tracer provider.
func TestBucketWriteSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(context.Background()) })

	ctx := context.Background()
	_, js := meshtest.Connect(t, meshtest.Start(t), mesh.Orders)
	b, err := KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	exp.Reset()
	rev, err := b.Put(ctx, "k1", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "k1", []byte("v")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second create: %v", err)
	}
	wrev, err := b.Write(ctx, "create", func(ctx context.Context) (uint64, error) {
		if _, err := b.Put(ctx, "idx.k2", []byte("1")); err != nil {
			return 0, err
		}
		return b.Create(ctx, "k2", []byte("v"))
	})
	if err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (put, create, one for the logical write): %v", len(spans), spans)
	}
	want := []struct {
		name     string
		rev      uint64
		conflict bool
	}{{"kv put orders", rev, false}, {"kv create orders", 0, true}, {"kv create orders", wrev, false}}
	for i, w := range want {
		s := spans[i]
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if s.Name != w.name || attrs["db.system.name"] != "nats_kv" || s.Status.Code != 0 {
			t.Errorf("span %d: %s %v %v, want %s", i, s.Name, attrs, s.Status, w.name)
		}
		if w.conflict && attrs["kv.conflict"] != "true" {
			t.Errorf("span %d: no kv.conflict: %v", i, attrs)
		}
		if w.rev > 0 && attrs["kv.revision"] != strconv.FormatUint(w.rev, 10) {
			t.Errorf("span %d: kv.revision %s, want %d", i, attrs["kv.revision"], w.rev)
		}
	}
}
