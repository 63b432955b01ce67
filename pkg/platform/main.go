package platform

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/health"
)

// Main is the whole of a service's main function:
//
//	func main() { platform.Main("billing", run) }
//
// With the argument "healthcheck" it probes the running service's /healthz on
// 127.0.0.1 with health.Local (for the exec-form Docker HEALTHCHECK in scratch
// images) and exits 0 or 1. Otherwise it loads the configuration, runs run until SIGINT or
// SIGTERM, and exits 1 when run fails.
func Main(service string, run func(ctx context.Context, cfg Config) error) {
	os.Exit(main(service, os.Args[1:], os.Getenv, run))
}

func main(service string, args []string, getenv func(string) string, run func(context.Context, Config) error) int {
	cfg, err := LoadConfig(service, getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			if err := health.Local(context.Background(), cfg.HTTPAddr, 3*time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "healthcheck:", err)
				return 1
			}
			return 0
		default:
			fmt.Fprintf(os.Stderr, "usage: %s [healthcheck]\n", service)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		return 1
	}
	return 0
}

// Boot is every service's run: New, then wire, which adds the service's
// routes, set-up steps and tasks (a wiring that fails stops what New
// started: its background loops, telemetry and NATS connection), then
// Options.BeforeRun, then Run.
//
//	func RunWith(ctx context.Context, cfg platform.Config, opts platform.Options) error {
//		opts.Errors = append(ports.ErrorMappings(), opts.Errors...)
//		return platform.Boot(ctx, cfg, opts, wire)
//	}
func Boot(ctx context.Context, cfg Config, opts Options, wire func(*App) error) error {
	a, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	if err := wire(a); err != nil {
		a.abort()
		a.NATS.Close()
		return err
	}
	if opts.BeforeRun != nil {
		opts.BeforeRun(a)
	}
	return a.Run(ctx)
}
