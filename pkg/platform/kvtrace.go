package platform

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/cas"
)

// Writes to a Bucket are client spans "kv <op> <bucket>" with
// db.system.name and the revision written; the operation and the bucket
// (db.operation.name, db.namespace) are in the name and not recorded again,
// since every attribute costs about half a microsecond recorded and exported
// (BenchmarkSpanAttributes in pkg/platform/telemetry). The key is not recorded: keys hold user ids ("u.<sub>.<order>").
// A lost compare-and-set (cas.Conflict) is an expected outcome of optimistic concurrency, recorded as
// kv.conflict, not as an error. One logical write made of several calls
// (Write) is one span.

// Put implements jetstream.KeyValue.Put under a span.
func (b *Bucket) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	ctx, span := b.startWrite(ctx, "put")
	rev, err := b.KeyValue.Put(ctx, key, value)
	endWrite(span, rev, err)
	return rev, err
}

// PutString implements jetstream.KeyValue.PutString under a span.
func (b *Bucket) PutString(ctx context.Context, key, value string) (uint64, error) {
	return b.Put(ctx, key, []byte(value))
}

// Create implements jetstream.KeyValue.Create under a span.
func (b *Bucket) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	ctx, span := b.startWrite(ctx, "create")
	rev, err := b.KeyValue.Create(ctx, key, value, opts...)
	endWrite(span, rev, err)
	return rev, err
}

// Update implements jetstream.KeyValue.Update under a span.
func (b *Bucket) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	ctx, span := b.startWrite(ctx, "update")
	rev, err := b.KeyValue.Update(ctx, key, value, revision)
	endWrite(span, rev, err)
	return rev, err
}

// Delete implements jetstream.KeyValue.Delete under a span.
func (b *Bucket) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	ctx, span := b.startWrite(ctx, "delete")
	err := b.KeyValue.Delete(ctx, key, opts...)
	endWrite(span, 0, err)
	return err
}

// Purge implements jetstream.KeyValue.Purge under a span.
func (b *Bucket) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	ctx, span := b.startWrite(ctx, "purge")
	err := b.KeyValue.Purge(ctx, key, opts...)
	endWrite(span, 0, err)
	return err
}

// Write runs fn, one logical write that makes several calls on b (billing's
// invoice and its index key), under one span "kv <op> <bucket>": the calls
// fn makes on b with the context it is given start no spans of their own.
// The span ends with fn's revision and error, as a single call's would.
func (b *Bucket) Write(ctx context.Context, op string, fn func(ctx context.Context) (uint64, error)) (uint64, error) {
	ctx, span := b.startWrite(ctx, op)
	if span.IsRecording() {
		// Unrecorded, the calls' own spans would be too (same trace, same
		// sampling decision): only a recording span needs them silenced.
		ctx = context.WithValue(ctx, logicalWriteKey{}, b)
	}
	rev, err := fn(ctx)
	endWrite(span, rev, err)
	return rev, err
}

// logicalWriteKey marks a context within Write on the bucket it holds.
type logicalWriteKey struct{}

// noSpan is what a call within Write gets: not recording, End does nothing.
var noSpan = trace.SpanFromContext(context.Background())

var kvSystem = attribute.String("db.system.name", "nats_kv")

// startWrite starts a write's span, or none within Write on b. As natsauth's
// spans, the name and attributes are built only for a span that records.
func (b *Bucket) startWrite(ctx context.Context, op string) (context.Context, trace.Span) {
	if w, _ := ctx.Value(logicalWriteKey{}).(*Bucket); w == b {
		return ctx, noSpan
	}
	ctx, span := platformTracer.Start(ctx, "kv", trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetName("kv " + op + " " + b.Bucket())
	}
	return ctx, span
}

// endWrite sets the span's attributes, all in one call (each call costs
// the SDK an allocation), and ends it.
func endWrite(span trace.Span, rev uint64, err error) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	var buf [2]attribute.KeyValue
	attrs := append(buf[:0], kvSystem)
	switch {
	case err == nil:
		if rev > 0 {
			attrs = append(attrs, attribute.Int64("kv.revision", int64(rev)))
		}
	case cas.Conflict(err):
		attrs = append(attrs, attribute.Bool("kv.conflict", true))
	default:
		span.SetStatus(codes.Error, err.Error())
	}
	authz.SetSpanAttributes(span, attrs)
}
