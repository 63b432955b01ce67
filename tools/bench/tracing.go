package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
	"github.com/authmesh/authmesh/tools/devstack"
)

// tracingResult is issue 16's overhead figure: the orders-create stage on a
// stack whose services trace nothing (no OTLP endpoint: OpenTelemetry's
// no-op tracer) next to the same stage on a stack whose services record
// every span (the default parentbased_always_on sampler, and the load's
// requests carry no trace context, so 100 % are sampled) and export it over
// OTLP/HTTP to an in-process sink that counts it undecoded. Each stage
// runs on a fresh stack, alternating (off, on, on, off, off, on, …: drift
// over the run cancels out of the means).
type tracingResult struct {
	Clients int
	Off, On []stage // one per round, in run order within each
	// The services' CPU (user+system, all of them) per order created in
	// each stage: what tracing costs the services themselves, where req/s
	// also moves with everything else on the host.
	OffCPU, OnCPU []time.Duration
	Spans         int64 // spans the receiver got during the "on" stages
	Exports       int64 // export requests that carried them
	OnCreated     int   // orders created in the "on" stages: measured, warm-up and the first
}

// tracingLossTarget is issue 16's target: tracing at 100 % sampling costs at
// most this share of orders-create's throughput.
const tracingLossTarget = 0.10

func runTracing(ctx context.Context, o options, log *slog.Logger) (*tracingResult, error) {
	if busy := devstack.PortsBusy(); len(busy) > 0 {
		return nil, fmt.Errorf("skipped: the contract ports %v are in use (a `make run` or `make up`?)", busy)
	}
	rcv := oteltest.Start()
	rcv.Discard = true
	defer rcv.Close()
	dir, err := os.MkdirTemp("", "authmesh-bench-tracing-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	res := &tracingResult{Clients: o.clients}
	order := tracingOrder(o.tracingRounds)
	for i, on := range order {
		endpoint, name := "", "orders-create-trace-off"
		if on {
			endpoint, name = rcv.Endpoint(), "orders-create-trace-on"
		}
		spans0, exports0 := rcv.Count(), rcv.Requests()
		st, warm, cpu, err := createStage(ctx, o, log, filepath.Join(dir, fmt.Sprint(i)), endpoint)
		if err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
		st.Name = name
		log.Info("stage", "name", st.Name, "req/s", int(st.RPS), "success", st.Success, "p99", st.P99, "codes", st.Codes, "errors", st.Errors, "services-cpu/order", cpu)
		if on {
			// The services flush their batches when they stop, so the count is complete.
			res.Spans += rcv.Count() - spans0
			res.Exports += rcv.Requests() - exports0
			// Every order the stack served counts: the spans of the first
			// order's and the warm-up's are in the count too.
			res.OnCreated += st.Codes["201"] + warm
			res.On = append(res.On, st)
			res.OnCPU = append(res.OnCPU, cpu)
		} else {
			res.Off = append(res.Off, st)
			res.OffCPU = append(res.OffCPU, cpu)
		}
	}
	return res, nil
}

// createStage starts a fresh stack exporting to otlp (none if empty), warms
// it with a short burst of orders, runs the orders-create stage, and stops it.
// warm is the orders created before the stage (the first and the warm-up's);
// cpu is the services' CPU per order the stage created.
func createStage(ctx context.Context, o options, log *slog.Logger, dir, otlp string) (st stage, warm int, cpu time.Duration, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return stage{}, 0, 0, err
	}
	logf, err := os.Create(filepath.Join(dir, "stack.log"))
	if err != nil {
		return stage{}, 0, 0, err
	}
	defer logf.Close()
	data := filepath.Join(dir, "data")
	r, stop, err := startDevstack(ctx, o, data, logf, otlp, log)
	if err != nil {
		return stage{}, 0, 0, err
	}
	defer stop()
	orders := "http://127.0.0.1:8402"
	auth := http.Header{"Authorization": {"Bearer " + r.AliceToken}, "Content-Type": {"application/json"}}
	body := []byte(`{"items":[{"sku":"mug","quantity":2},{"sku":"tea-green","quantity":1}]}`)
	if _, err := createOrder(ctx, http.DefaultClient, orders, auth, body); err != nil {
		return stage{}, 0, 0, fmt.Errorf("creating a first order: %w", err)
	}
	pids := findPIDs(filepath.Join(data, "bin"))
	if len(pids) != len(devstack.Services) {
		return stage{}, 0, 0, fmt.Errorf("found %d of %d service processes", len(pids), len(devstack.Services))
	}
	servicesCPU := func() (d time.Duration) {
		for _, pid := range pids {
			c, _ := procCPU(pid)
			d += c
		}
		return d
	}
	t := vegeta.Target{Method: "POST", URL: orders + "/v1/orders", Header: auth, Body: body}
	// Warm-up: token and profile caches, connections, consumers' first pulls.
	w := attack(ctx, t, o.clients, min(o.stageDur/4, 2*time.Second))
	cpu0 := servicesCPU()
	st = attack(ctx, t, o.clients, o.stageDur)
	// Orders go on to billing after their 201: let that finish before the
	// CPU is read, as it is part of what an order costs.
	time.Sleep(time.Second)
	if n := st.Codes["201"]; n > 0 {
		cpu = (servicesCPU() - cpu0) / time.Duration(n)
	}
	if st.Success < 1 {
		return st, 0, 0, fmt.Errorf("%.1f%% of the requests succeeded (%v %v)", 100*st.Success, st.Codes, st.Errors)
	}
	return st, 1 + w.Codes["201"], cpu, nil
}

// meanCPU is the mean of the rounds' CPU per order.
func meanCPU(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// mean is the variant's mean req/s over its rounds and the p50/p99 of all
// its requests together.
func (tr *tracingResult) mean(st []stage) (rps float64, p50, p99 time.Duration) {
	var lat []time.Duration
	for _, s := range st {
		rps += s.RPS / float64(len(st))
		lat = append(lat, s.Lat...)
	}
	slices.Sort(lat)
	return rps, pct(lat, 50), pct(lat, 99)
}

// rpsRange is the lowest and the highest req/s of st (not empty).
func rpsRange(st []stage) (lo, hi float64) {
	lo, hi = st[0].RPS, st[0].RPS
	for _, s := range st[1:] {
		lo, hi = min(lo, s.RPS), max(hi, s.RPS)
	}
	return lo, hi
}

// loss is the throughput lost with tracing on, as a share of tracing off.
func (tr *tracingResult) loss() (loss, on, off float64, ok bool) {
	if tr == nil || len(tr.On) == 0 || len(tr.Off) == 0 {
		return 0, 0, 0, false
	}
	off, _, _ = tr.mean(tr.Off)
	on, _, _ = tr.mean(tr.On)
	if off <= 0 {
		return 0, on, off, false
	}
	return 1 - on/off, on, off, true
}

func (tr *tracingResult) markdown(p func(string, ...any)) {
	p("## Tracing overhead (issue 16)\n\n")
	p("`POST /v1/orders` with %d workers as fast as they go, as in the stack's create stage above, each stage on a\n", tr.Clients)
	p("fresh `devstack.Run` (after one order and a short warm-up burst), in the order %s. **off**: no\n", tr.runOrder())
	p("`OTEL_EXPORTER_OTLP_ENDPOINT`, the services run OpenTelemetry's no-op tracer. **on**: every service exports\n")
	p("over OTLP/HTTP to an in-process sink (`pkg/platform/telemetry/oteltest` with Discard: it counts the spans without\n")
	p("decoding them, so the figure is the services' cost — a deployment exports to a collector elsewhere), with the\n")
	p("default `parentbased_always_on` sampler and no trace context on the requests: 100 %% of them are traced.\n\n")
	p("| tracing | req/s (mean of rounds) | p50 | p99 | rounds (req/s) |\n|---|---|---|---|---|\n")
	for _, v := range []struct {
		name string
		st   []stage
	}{{"off", tr.Off}, {"on, 100 % sampled", tr.On}} {
		if len(v.st) == 0 {
			continue
		}
		rps, p50, p99 := tr.mean(v.st)
		var rounds []string
		for _, s := range v.st {
			rounds = append(rounds, fmt.Sprintf("%.0f", s.RPS))
		}
		p("| %s | %.0f | %s | %s | %s |\n", v.name, rps, ms(p50), ms(p99), strings.Join(rounds, ", "))
	}
	p("\n")
	if loss, on, off, ok := tr.loss(); ok {
		verdict := "within"
		if loss > tracingLossTarget {
			verdict = "over"
		}
		p("**Throughput lost with tracing on: %.1f %%** (%.0f against %.0f req/s), %s the target of ≤ %.0f %%.\n", 100*loss, on, off, verdict, 100*tracingLossTarget)
		if len(tr.Off) > 1 {
			lo, hi := rpsRange(tr.Off)
			p("The host's speed moves between stages too: the off stages alone, the same configuration each time, range from\n")
			p("%.0f to %.0f req/s, %.0f %% of their mean apart.\n", lo, hi, 100*(hi-lo)/off)
		}
		if off, on := meanCPU(tr.OffCPU), meanCPU(tr.OnCPU); off > 0 && on > 0 {
			p("The services' CPU per order (user+system of all four from `/proc/<pid>/stat` over each stage and the second after\n")
			p("it, divided by the orders it created; mean of rounds): **%d µs off, %d µs on (+%.0f %%)**. It counts the services'\n", off.Microseconds(), on.Microseconds(), 100*(float64(on)/float64(off)-1))
			p("own work only (req/s also moves with NATS, the load generator, the sink and the host); it still follows the host's speed.\n")
		}
		if tr.OnCreated > 0 {
			p("The receiver got %d spans in %d export requests for the %d orders the traced stacks created, warm-ups included (%.1f spans per order).\n", tr.Spans, tr.Exports, tr.OnCreated, float64(tr.Spans)/float64(tr.OnCreated))
		}
		p("\n")
	}
}

func (tr *tracingResult) runOrder() string {
	order := tracingOrder(min(len(tr.Off), len(tr.On)))
	names := make([]string, len(order))
	for i, on := range order {
		names[i] = "off"
		if on {
			names[i] = "on"
		}
	}
	if len(order) > 2 {
		return strings.Join(names, ", ") + " (drift over the run cancels out of the means)"
	}
	return strings.Join(names, ", ")
}

// tracingOrder is the stages of rounds rounds, true for tracing on: each
// round an off and an on stage, every other round the other way round (off,
// on, on, off, off, on, …), so that a drift over the run weighs on both alike.
func tracingOrder(rounds int) []bool {
	order := make([]bool, 0, 2*rounds)
	for i := range rounds {
		order = append(order, i%2 == 1, i%2 == 0)
	}
	return order
}
