// Command bench is `make bench`: it measures authmesh's auth layer against its
// alternatives in the same run and writes BENCHMARKS.md with PNG charts under
// docs/bench/. Everything runs on loopback and is bounded in time:
//
//  1. the Go benchmarks of pkg/authz, pkg/authz/natsauth, the transaction
//     token exchange of services/tts and NATS connect time through the auth
//     callout next to a password connect (pkg/platform/callout; go test -bench);
//  2. wrk, in its own process, against one Echo handler served open, behind
//     pkg/authz and behind go-jwt-middleware (cmd/echoserver);
//  3. the embedded stack (tools/devstack: NATS, devtenant and every process
//     of devstack.Services, the TTS included) under load from vegeta: order
//     creation as a share of an authenticated read, both next to /healthz,
//     and order → invoice latency with 50 clients;
//  4. resources: RSS idle and under load, binary and image sizes, cold start.
//
// Run it from the repository root: go run ./tools/bench [-quick] [-skip-stack].
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
)

type options struct {
	root      string
	out       string // BENCHMARKS.md
	charts    string // docs/bench
	count     int    // go test -count
	benchtime string
	wrkDur    time.Duration
	wrkRounds int
	stageDur  time.Duration // each stack load stage
	clients   int
	skipGo    bool
	skipWrk   bool
	skipStack bool
	// The tracing overhead rounds (tracing.go): each an off and an on stage, alternating.
	skipTracing   bool
	tracingRounds int
	stackLog      string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	flag.StringVar(&o.root, "root", "", "repository root (default: found from the working directory)")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "report path, relative to the root")
	flag.StringVar(&o.charts, "charts", filepath.Join("docs", "bench"), "chart directory, relative to the root")
	flag.IntVar(&o.count, "count", 5, "rounds of the Go benchmarks (median reported)")
	flag.StringVar(&o.benchtime, "benchtime", "1s", "go test -benchtime")
	flag.DurationVar(&o.wrkDur, "wrk-duration", 3*time.Second, "duration of each wrk run")
	flag.IntVar(&o.wrkRounds, "wrk-rounds", 5, "interleaved rounds of open/authz/go-jwt-middleware under wrk (median reported)")
	flag.DurationVar(&o.stageDur, "stage", 8*time.Second, "duration of each load stage against the stack")
	flag.IntVar(&o.clients, "clients", 50, "concurrent clients against the stack")
	flag.BoolVar(&o.skipGo, "skip-go", false, "skip the Go benchmarks")
	flag.BoolVar(&o.skipWrk, "skip-wrk", false, "skip the wrk comparison")
	flag.BoolVar(&o.skipStack, "skip-stack", false, "skip the stack under load")
	flag.BoolVar(&o.skipTracing, "skip-tracing", false, "skip orders-create with tracing on and off")
	flag.IntVar(&o.tracingRounds, "tracing-rounds", 4, "rounds of orders-create with tracing off and on, each an off and an on stage, alternating (off, on, on, off, off, on, …)")
	flag.StringVar(&o.stackLog, "stack-log", "", "keep the stack's logs in this file (default: discarded with the temporary directory)")
	quick := flag.Bool("quick", false, "short runs (a smoke test of the runner, not a measurement)")
	flag.Parse()
	if *quick {
		o.count, o.benchtime, o.wrkDur, o.wrkRounds, o.stageDur, o.tracingRounds = 1, "200ms", time.Second, 1, 2*time.Second, 1
	}
	if o.tracingRounds < 1 || o.tracingRounds > 20 {
		return fmt.Errorf("-tracing-rounds %d: want 1 to 20", o.tracingRounds)
	}
	if o.root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if o.root, err = devstack.FindRoot(wd); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The whole run is bounded; every stage has its own, shorter deadline too.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	rep := &report{Machine: machineInfo(ctx), Started: time.Now()}
	log.Info("machine", "cpu", rep.Machine.CPU, "cores", rep.Machine.Cores, "load", rep.Machine.LoadStart)

	if !o.skipGo {
		log.Info("go benchmarks", "count", o.count, "benchtime", o.benchtime)
		gb, err := runGoBench(ctx, o)
		rep.failed(log, "go benchmarks", "Go benchmarks failed", err)
		rep.Go = gb
	}
	if !o.skipWrk {
		log.Info("wrk against cmd/echoserver", "duration", o.wrkDur, "rounds", o.wrkRounds)
		wr, err := runWrk(ctx, o, log)
		rep.failed(log, "wrk", "wrk comparison skipped", err)
		rep.Wrk = wr
	}
	if !o.skipStack {
		log.Info("stack under load", "clients", o.clients, "stage", o.stageDur)
		st, err := runStack(ctx, o, log)
		rep.failed(log, "stack", "stack under load", err)
		rep.Stack = st
	}
	if !o.skipTracing {
		log.Info("tracing overhead: orders-create with tracing off and on, each on a fresh stack", "clients", o.clients, "stage", o.stageDur, "rounds", o.tracingRounds)
		tr, err := runTracing(ctx, o, log)
		rep.failed(log, "tracing", "tracing overhead", err)
		rep.Tracing = tr
	}
	rep.Machine.LoadEnd = loadAvg()
	rep.Elapsed = time.Since(rep.Started)
	rep.Sizes = sizes(ctx, o.root)
	if err := rep.write(o); err != nil {
		return err
	}
	log.Info("wrote", "report", under(o.root, o.out), "charts", under(o.root, o.charts), "took", rep.Elapsed.Round(time.Second))
	for _, t := range rep.targets() {
		log.Info("target", "what", t.What, "value", t.Value, "status", t.status())
	}
	return nil
}

// failed notes a stage's error in the report and the log; the report goes
// on without that stage's figures.
func (r *report) failed(log *slog.Logger, stage, note string, err error) {
	if err == nil {
		return
	}
	r.Notes = append(r.Notes, note+": "+err.Error())
	log.Error(stage, "err", err)
}
