package natsauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/authmesh/authmesh/pkg/authz"
)

// BenchmarkNATSRequest compares a plain micro request-reply with the same
// round trip carrying a forwarded transaction token that the endpoint
// validates (from the validator's verified-token cache) and authorizes.
// Target: authz ≥ 80 % of raw's throughput; the ratio is printed after both
// ran.
//
// raw sends the very message authz sends (Txn-Token, request id and
// traceparent headers) to an endpoint without natsauth, so the ratio is the
// cost of the auth layer. raw-no-headers sends no headers at all: the gap
// between it and raw is what carrying the token costs in NATS itself (the
// server's header path), whichever layer then reads it. authz-exchanged is
// authz sent from an HTTP handler: the caller's access token is exchanged
// by a TxnClient, whose cache serves every request after the first.
func BenchmarkNATSRequest(b *testing.B) {
	tracingOff(b)
	m := newMesh(b)
	nc, _ := connect(b, startNATS(b))

	raw, err := micro.AddService(nc, micro.Config{Name: "raw", Version: "1.0.0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = raw.Stop() })
	if err := raw.AddEndpoint("profile", micro.HandlerFunc(func(req micro.Request) { _ = req.Respond([]byte(`{"ok":true}`)) }),
		micro.WithEndpointSubject("bench.raw")); err != nil {
		b.Fatal(err)
	}
	svc := newTestService(b, nc, "authz", m.txn)
	if err := svc.AddEndpoint("profile", "bench.authz", authz.RequireAll("read:profile").Users(),
		func(ctx context.Context, req micro.Request) { _ = req.Respond([]byte(`{"ok":true}`)) }); err != nil {
		b.Fatal(err)
	}
	// A NATS handler's context: the transaction token it received.
	ctx := txnCtx(b, m.txn, m.userTxn(b, "read:profile", nil))
	// An HTTP handler's context, exchanging through a TxnClient and the
	// in-process token service.
	tts := startTTS(b, nc, m.ex)
	txc, err := NewTxnClient(TxnClientConfig{Conn: nc, Actor: staticToken(m.m2mToken(b, "orders-service", "read:profile"))})
	if err != nil {
		b.Fatal(err)
	}
	httpCtx := userCtx(b, m.access, txc, m.tenant.Token(b, nil), anySubject("read:profile"))

	// The same headers as authz's messages, fixed once.
	same, err := NewMsg(ctx, "bench.raw", nil)
	if err != nil {
		b.Fatal(err)
	}
	// raw and raw-no-headers: no natsauth on either side.
	send := map[string]struct {
		ctx context.Context
		f   func(context.Context) error
	}{
		"raw-no-headers": {ctx, func(ctx context.Context) error { _, err := nc.RequestWithContext(ctx, "bench.raw", nil); return err }},
		"raw": {ctx, func(ctx context.Context) error {
			msg := nats.NewMsg("bench.raw")
			for k, v := range same.Header {
				msg.Header[k] = v
			}
			_, err := nc.RequestMsgWithContext(ctx, msg)
			return err
		}},
		"authz": {ctx, func(ctx context.Context) error {
			_, err := Request(ctx, nc, "bench.authz", nil)
			return err
		}},
		"authz-exchanged": {httpCtx, func(ctx context.Context) error {
			_, err := Request(ctx, nc, "bench.authz", nil)
			return err
		}},
	}
	for range 300 { // warm up connections, caches and the scheduler for all
		for _, s := range send {
			if err := s.f(s.ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if n := tts.requests.Load(); n != 1 {
		b.Fatalf("%d exchanges while warming up, want 1 (then cached)", n)
	}
	names := []string{"raw", "authz", "raw-no-headers", "authz-exchanged"}
	nsPerOp := make([]float64, len(names))
	for i, name := range names {
		b.Run(name, func(b *testing.B) {
			s := send[name]
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				rctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
				err := s.f(rctx)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			nsPerOp[i] = float64(time.Since(start).Nanoseconds()) / float64(b.N)
		})
	}
	if nsPerOp[0] > 0 && nsPerOp[1] > 0 {
		fmt.Printf("BenchmarkNATSRequest: authz throughput = %.1f%% of raw (raw %.1f µs/op, authz %.1f µs/op)\n",
			100*nsPerOp[0]/nsPerOp[1], nsPerOp[0]/1e3, nsPerOp[1]/1e3)
	}
	if nsPerOp[0] > 0 && nsPerOp[3] > 0 {
		fmt.Printf("BenchmarkNATSRequest: authz-exchanged throughput = %.1f%% of raw (%.1f µs/op)\n",
			100*nsPerOp[0]/nsPerOp[3], nsPerOp[3]/1e3)
	}
}

// tracingOff runs b as a service without OTEL_EXPORTER_OTLP_ENDPOINT runs:
// no SDK, OpenTelemetry's no-op tracer (TestMain installs a recording SDK
// for the package's trace tests, which would otherwise time span recording
// and let the recorder grow for the whole benchmark).
func tracingOff(b *testing.B) {
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(noop.NewTracerProvider())
	b.Cleanup(func() { otel.SetTracerProvider(prev) })
}
