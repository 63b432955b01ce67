// Package platform is what every authmesh service's run function shares:
// configuration from the environment, the Echo HTTP server with its
// middleware (a server span, request id, one structured log line per
// request, recover, body limit, CORS, Prometheus metrics, route policies),
// the one HTTP error handler, the NATS/JetStream connection, the authz wiring
// (keys, validator, revocation watcher, M2M token source), /healthz, /readyz
// and /metrics, graceful shutdown, and the `healthcheck` subcommand.
//
// Tracing (package telemetry) is configured by the standard OTEL_* variables
// alone and is off without an OTLP endpoint. When on, every request is a
// server span named after its route with the authorization decision on it,
// Bucket writes are client spans, NATS requests and JetStream events are
// spans of natsauth's, every log line written with a request's or message's
// context carries trace_id and span_id, and Run flushes the spans at
// shutdown.
//
// A service's main package reads:
//
//	func main() { platform.Main("billing", run) }
//
//	func run(ctx context.Context, cfg platform.Config) error {
//		app, err := platform.New(ctx, cfg, platform.Options{
//			Errors: []platform.ErrorMapping{
//				{Target: domain.ErrNotFound, Status: http.StatusNotFound, Code: "not_found"},
//				{Target: domain.ErrConflict, Status: http.StatusConflict, Code: "conflict"},
//			},
//		})
//		if err != nil {
//			return err
//		}
//		bucket := platform.NewLazy[*platform.Bucket]("invoices bucket")
//		app.Route(http.MethodGet, "/v1/invoices", authz.RequireAll("read:invoices").Users(), h.list)
//		app.SetUp("invoices-bucket", func(ctx context.Context) error {
//			b, err := platform.KeyValue(ctx, app.JetStream, bucketConfig)
//			if err == nil {
//				bucket.Set(b)
//			}
//			return err
//		})
//		app.Go("orders-consumer", consumer.Run) // starts once the bucket is set up
//		return app.Run(ctx)
//	}
//
// Every service boots the same way: what needs NATS is a set-up step
// (App.SetUp, retried with backoff, gating readiness and later tasks), what
// it produces reaches the handlers through a Lazy (503 until set), and a
// read-modify-write on a bucket retries through cas.Retry.
//
// Run refuses to start when a route was added to the Echo instance without a
// policy, so deny-by-default holds even for routes added behind its back.
package platform
