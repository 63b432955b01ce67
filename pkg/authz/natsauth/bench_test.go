package natsauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// BenchmarkNATSRequest compares a plain micro request-reply with the same
// round trip carrying a propagated token that the endpoint validates (from
// the validator's verified-token cache) and authorizes. Target: authz ≥ 80 %
// of raw's throughput; the ratio is printed after both ran.
//
// raw sends the very message authz sends (Authorization, request id and
// traceparent headers) to an endpoint without natsauth, so the ratio is the
// cost of the auth layer. raw-no-headers sends no headers at all: the gap
// between it and raw is what carrying a 1 KB token costs in NATS itself (the
// server's header path), whichever layer then reads it.
func BenchmarkNATSRequest(b *testing.B) {
	iss := authztest.NewIssuer(b)
	v := newValidator(b, iss)
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
	svc, err := NewService(nc, micro.Config{Name: "authz", Version: "1.0.0"}, v)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint("profile", "bench.authz", authz.RequireAll("read:profile").Users(),
		func(ctx context.Context, req micro.Request) { _ = req.Respond([]byte(`{"ok":true}`)) }); err != nil {
		b.Fatal(err)
	}
	ctx := userCtx(b, v, iss.Token(b, nil))

	// The same headers as authz's messages, fixed once.
	same, err := NewMsg(ctx, "bench.raw", nil)
	if err != nil {
		b.Fatal(err)
	}
	// raw and raw-no-headers: no natsauth on either side.
	send := map[string]func(context.Context) error{
		"raw-no-headers": func(ctx context.Context) error { _, err := nc.RequestWithContext(ctx, "bench.raw", nil); return err },
		"raw": func(ctx context.Context) error {
			msg := nats.NewMsg("bench.raw")
			for k, v := range same.Header {
				msg.Header[k] = v
			}
			_, err := nc.RequestMsgWithContext(ctx, msg)
			return err
		},
		"authz": func(ctx context.Context) error {
			_, err := Request(ctx, nc, "bench.authz", nil)
			return err
		},
	}
	for range 300 { // warm up connections, caches and the scheduler for both
		for _, f := range send {
			if err := f(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	var nsPerOp [3]float64
	for i, name := range []string{"raw", "authz", "raw-no-headers"} {
		b.Run(name, func(b *testing.B) {
			f := send[name]
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := f(rctx)
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
}
