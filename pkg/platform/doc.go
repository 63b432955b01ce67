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
// A service's main package calls platform.Main(service.Name, service.Run),
// and its internal/service package reads:
//
//	func Run(ctx context.Context, cfg platform.Config) error {
//		opts := platform.Options{Errors: ports.ErrorMappings()}
//		return platform.Boot(ctx, cfg, opts, wire)
//	}
//
//	func wire(a *platform.App) error {
//		bucket := platform.NewLazyBucket(adapters.InvoiceBucket)
//		svc, err := app.New(app.Deps{Store: adapters.NewStore(bucket), ...})
//		if err != nil {
//			return err
//		}
//		ports.RegisterHTTP(a, svc) // each route with its policy
//		a.SetUp("billing-storage", func(ctx context.Context) error {
//			if err := mesh.Provision(ctx, a.JetStream, Name, a.Config.NATSReplicas); err != nil {
//				return err
//			}
//			b, err := adapters.EnsureBuckets(ctx, a.JetStream, a.Config.NATSReplicas)
//			if err == nil {
//				bucket.Set(b)
//			}
//			return err
//		})
//		// Both start once the bucket is set up.
//		a.ServeNATS(micro.Config{Name: Name, Version: "1.0.0"}, natsMetrics, func(ms *natsauth.Service) error {
//			return ports.RegisterNATS(ms, svc)
//		})
//		a.Go("orders-consumer", consumer.Run)
//		return nil
//	}
//
// Every service boots the same way: what needs NATS is a set-up step
// (App.SetUp, retried with backoff, gating readiness and later tasks), what
// it produces reaches the handlers through a Lazy (503 until set), a NATS
// endpoint is served by ServeNATS once the steps before it succeeded, and a
// read-modify-write on a bucket retries through cas.Retry.
//
// Run refuses to start when a route was added to the Echo instance without a
// policy, so deny-by-default holds even for routes added behind its back.
package platform
