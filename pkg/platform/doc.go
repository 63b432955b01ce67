// Package platform is what every authmesh service's run function shares:
// configuration from the environment, the Echo HTTP server with its
// middleware (request id, one structured log line per request, recover, body
// limit, CORS, Prometheus metrics, route policies), the one HTTP error
// handler, the NATS/JetStream connection, the authz wiring (keys, validator,
// revocation watcher, M2M token source), /healthz, /readyz and /metrics,
// graceful shutdown, and the `healthcheck` subcommand.
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
//		app.Route(http.MethodGet, "/v1/invoices", authz.RequireAll("read:invoices").Users(), h.list)
//		app.AddReadyCheck("invoices-bucket", store.Ready)
//		app.Go("orders-consumer", consumer.Run)
//		return app.Run(ctx)
//	}
//
// Run refuses to start when a route was added to the Echo instance without a
// policy, so deny-by-default holds even for routes added behind its back.
package platform
