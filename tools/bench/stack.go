package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
)

type stackResult struct {
	Clients    int
	StackReady time.Duration            // devstack.Run → ready, including go build of the services
	ColdStart  map[string]time.Duration // process start → first 200 from its /readyz
	RSSIdle    map[string]int64         // KiB, after the stack settled
	RSSLoad    map[string]int64         // KiB, peak during the load stages
	Binaries   map[string]int64         // bytes, as devstack builds them
	Stages     []stage
	Invoice    *invoiceLatency
	// From the create stage's start until billing listed the invoice of its
	// last order, and the invoices per second that makes.
	Drain         time.Duration
	InvoiceRate   float64
	DrainTimedOut bool
}

// runStack starts the embedded stack through tools/devstack with a throwaway
// data directory, measures it and stops it. The stages, in order: the load
// stages against orders (load.go), order → invoice latency (invoice.go), and
// throughout, the processes' resources (resources.go).
func runStack(ctx context.Context, o options, log *slog.Logger) (*stackResult, error) {
	if busy := devstack.PortsBusy(); len(busy) > 0 {
		return nil, fmt.Errorf("skipped: the contract ports %v are in use (a `make run` or `make up`?); stop it and run again, "+
			"or run the bench in a private network namespace: sudo unshare -n sh -c 'ip link set lo up && go run ./tools/bench'", busy)
	}
	dir, err := os.MkdirTemp("", "authmesh-bench-stack-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	logPath := o.stackLog
	if logPath == "" {
		logPath = filepath.Join(dir, "stack.log")
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	data := filepath.Join(dir, "data")
	binDir := filepath.Join(data, "bin")

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	cold := newColdStartWatcher(binDir)
	go cold.watch(runCtx)
	r, stop, err := startDevstack(runCtx, o, data, logf, "", log)
	if err != nil {
		return nil, err
	}
	defer stop()
	res := &stackResult{Clients: o.clients, StackReady: time.Since(start), ColdStart: cold.result(),
		RSSIdle: map[string]int64{}, RSSLoad: map[string]int64{}, Binaries: map[string]int64{}}
	log.Info("stack ready", "took", res.StackReady.Round(time.Millisecond), "cold", res.ColdStart)
	for _, s := range devstack.Services {
		if fi, err := os.Stat(filepath.Join(binDir, s.Name)); err == nil {
			res.Binaries[s.Name] = fi.Size()
		}
	}

	pids := findPIDs(binDir)
	if len(pids) != len(devstack.Services) {
		return res, fmt.Errorf("found %d of %d service processes", len(pids), len(devstack.Services))
	}
	// Idle: the services have started their consumers and watchers; give the
	// runtime a moment to settle before reading RSS.
	time.Sleep(3 * time.Second)
	for name, pid := range pids {
		res.RSSIdle[name] = rssKiB(pid)
	}
	sampler := startRSSSampler(ctx, pids)

	orders, billing := "http://127.0.0.1:8402", "http://127.0.0.1:8403"
	auth := http.Header{"Authorization": {"Bearer " + r.AliceToken}, "Content-Type": {"application/json"}}
	body := []byte(`{"items":[{"sku":"mug","quantity":2},{"sku":"tea-green","quantity":1}]}`)
	perClient, err := runLoad(ctx, o, log, res, orders, billing, auth, body)
	if err != nil {
		return res, err
	}
	res.Invoice = orderToInvoice(ctx, orders, billing, auth, body, o.clients, perClient, o.stageDur+o.stageDur/2)
	res.RSSLoad = sampler.stop()
	log.Info("order → invoice", "orders", res.Invoice.Orders, "missing", res.Invoice.Missing, "failures", res.Invoice.Failures,
		"p99", pct(res.Invoice.Invoice, 99))
	return res, nil
}

// startDevstack runs the embedded stack with its state in data and its logs
// in logf, the services exporting their spans to otlp unless it is empty,
// and returns once it is ready; stop ends it and waits (20 s at most).
func startDevstack(ctx context.Context, o options, data string, logf *os.File, otlp string, log *slog.Logger) (r devstack.Ready, stop func(), err error) {
	runCtx, cancel := context.WithCancel(ctx)
	ready := make(chan devstack.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(runCtx, devstack.Config{
			Root: o.root, DataDir: data, Out: logf, NoBanner: true,
			ReadyTimeout: 4 * time.Minute, OTLPEndpoint: otlp,
			OnReady: func(r devstack.Ready) { ready <- r },
		})
	}()
	select {
	case r = <-ready:
	case err := <-done:
		cancel()
		return r, nil, fmt.Errorf("devstack: %v (log: %s)", err, tail(logf.Name()))
	}
	return r, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			log.Warn("devstack did not stop within 20s")
		}
	}, nil
}
