package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const wrkOut = `Running 5s test @ http://127.0.0.1:41173/v1/me
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    2.01ms  40.11ms   90.12%
    Req/Sec    12.31k     1.20k   14.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    3.20ms
     99%   11.02ms
  122450 requests in 5.00s, 14.01MB read
Requests/sec:  24490.12
Transfer/sec:      2.80MB
`

func TestParseWrk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		rps     float64
		p50     time.Duration
		p99     time.Duration
		wantErr string
	}{
		{name: "ok", in: wrkOut, rps: 24490.12, p50: 812 * time.Microsecond, p99: 11020 * time.Microsecond},
		{name: "non-2xx invalidates the run", in: strings.Replace(wrkOut, "Requests/sec", "  Non-2xx or 3xx responses: 17\nRequests/sec", 1), wantErr: "17 non-2xx"},
		{name: "socket errors invalidate the run", in: strings.Replace(wrkOut, "Requests/sec", "  Socket errors: connect 0, read 3, write 0, timeout 2\nRequests/sec", 1), wantErr: "Socket errors"},
		{name: "no latency distribution", in: strings.Replace(wrkOut, "     99%   11.02ms\n", "", 1), wantErr: "latency distribution"},
		{name: "no throughput", in: "garbage", wantErr: "Requests/sec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rps, lat, err := parseWrk(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := wrkRequests(tt.in); n != 122450 {
				t.Fatalf("requests = %d, want 122450", n)
			}
			if rps != tt.rps || lat["50%"] != tt.p50 || lat["99%"] != tt.p99 {
				t.Fatalf("got %v req/s, p50 %v, p99 %v; want %v, %v, %v", rps, lat["50%"], lat["99%"], tt.rps, tt.p50, tt.p99)
			}
		})
	}
}

const goOut = `goos: linux
goarch: amd64
pkg: github.com/authmesh/authmesh/pkg/authz
cpu: AMD EPYC
BenchmarkValidate/baseline-go-jwt-middleware-2   	   16000	     70000 ns/op	   11792 B/op	     147 allocs/op
BenchmarkValidate/baseline-go-jwt-middleware-2   	   16000	     90000 ns/op	   11792 B/op	     147 allocs/op
BenchmarkValidate/baseline-go-jwt-middleware-2   	   16000	     72000 ns/op	   11792 B/op	     147 allocs/op
BenchmarkValidate/authz-cached-2                 	  900000	      1400 ns/op	       0 B/op	       0 allocs/op	        50.00 x-faster-than-baseline
PASS
ok  	github.com/authmesh/authmesh/pkg/authz	12.1s
pkg: github.com/authmesh/authmesh/pkg/authz/natsauth
BenchmarkNATSRequest/raw-2     	   10000	    150000 ns/op	    1667 B/op	      27 allocs/op
BenchmarkNATSRequest: authz throughput = 105.0% of raw (raw 155.5 µs/op, authz 148.2 µs/op)
BenchmarkNATSRequest/authz-2   	   10000	    148000 ns/op	   10454 B/op	      74 allocs/op
BenchmarkNATSRequest/authz-exchanged-2         	   10000	    151000 ns/op	   10890 B/op	      80 allocs/op
BenchmarkNATSRequest: authz-exchanged throughput = 98.0% of raw (151.0 µs/op)
PASS
ok  	github.com/authmesh/authmesh/pkg/authz/natsauth	9.3s
goos: linux
goarch: amd64
pkg: github.com/authmesh/authmesh/services/tts/internal/service
cpu: AMD EPYC
BenchmarkExchange/uncached-2         	    1261	    905195 ns/op	   33852 B/op	     262 allocs/op
BenchmarkExchange/cached-2           	 1000000	      1506 ns/op	       0 B/op	       0 allocs/op
PASS
ok  	github.com/authmesh/authmesh/services/tts/internal/service	3.409s
`

func TestParseGoBench(t *testing.T) {
	t.Parallel()
	res, err := parseGoBench(goOut)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ns     float64
		allocs float64
		runs   int
	}{
		{"Validate/baseline-go-jwt-middleware", 72000, 147, 3}, // median, not mean
		{"Validate/authz-cached", 1400, 0, 1},
		{"NATSRequest/raw", 150000, 27, 1},
		{"NATSRequest/authz", 148000, 74, 1},
		{"NATSRequest/authz-exchanged", 151000, 80, 1},
		// Another module's binary, after the first one's PASS and ok lines.
		{"Exchange/uncached", 905195, 262, 1},
		{"Exchange/cached", 1506, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := res[tt.name]
			if !ok {
				t.Fatalf("no result for %s in %v", tt.name, res)
			}
			if abs(got.NsOp-tt.ns) > 1e-6 || got.AllocsOp != tt.allocs || got.Runs != tt.runs {
				t.Fatalf("got %+v, want ns/op %v allocs %v runs %d", got, tt.ns, tt.allocs, tt.runs)
			}
		})
	}
	if got := res["Validate/authz-cached"].Metrics["x-faster-than-baseline"]; got != 50 {
		t.Fatalf("x-faster-than-baseline = %v, want the benchmark's own metric, 50", got)
	}
	if _, err := parseGoBench("PASS\n"); err == nil {
		t.Fatal("no results must be an error")
	}
}

func TestTargets(t *testing.T) {
	t.Parallel()
	status := func(r *report) map[string]string {
		m := map[string]string{}
		for _, tg := range r.targets() {
			m[tg.What] = tg.status()
		}
		return m
	}
	const wrkOpen, wrkGoJWT = "wrk: authz / open throughput ≥ 0.85", "wrk: authz / go-jwt-middleware throughput ≥ 3×"
	const inv = "order → invoice p99 < 50 ms at 50 clients"
	const cold = "validate: cold ≤ 1.1× the baseline's time (paired)"
	stages := func(st ...stage) *report { return &report{Stack: &stackResult{Stages: st}} }
	paired := func(x ...float64) *goBench {
		g := &goBench{}
		for _, v := range x {
			g.Rounds = append(g.Rounds, map[string]benchStat{"Validate/paired-cold-vs-baseline": {NsOp: 1, Metrics: map[string]float64{"x-baseline-time": v}}})
		}
		return g
	}
	tests := []struct {
		name string
		r    *report
		want map[string]string
	}{
		{"nothing measured", &report{}, map[string]string{wrkOpen: "NOT MEASURED", wrkGoJWT: "NOT MEASURED", inv: "NOT MEASURED", cold: "NOT MEASURED",
			createShareWhat: "NOT MEASURED", tracingTargetWhat: "NOT MEASURED"}},
		// The means of the rounds: off 1000, on 905 (9.5 % lost); on 895 is 10.5 %.
		{"tracing met", &report{Tracing: &tracingResult{Off: []stage{{RPS: 1100}, {RPS: 900}}, On: []stage{{RPS: 910}, {RPS: 900}}}},
			map[string]string{tracingTargetWhat: "MET"}},
		{"tracing missed", &report{Tracing: &tracingResult{Off: []stage{{RPS: 1100}, {RPS: 900}}, On: []stage{{RPS: 890}, {RPS: 900}}}},
			map[string]string{tracingTargetWhat: "MISSED"}},
		{"tracing with one side only", &report{Tracing: &tracingResult{Off: []stage{{RPS: 1000}}}},
			map[string]string{tracingTargetWhat: "NOT MEASURED"}},
		{"create share is informational", stages(stage{Name: "orders-read", RPS: 9000}, stage{Name: "orders-create", RPS: 1500}),
			map[string]string{createShareWhat: "INFO"}},
		{"create share without a read stage", stages(stage{Name: "orders-create", RPS: 1500}), map[string]string{createShareWhat: "NOT MEASURED"}},
		{"cold met: median of the rounds' paired ratios", &report{Go: paired(1.3, 1.05, 1.08)}, map[string]string{cold: "MET"}},
		{"cold missed", &report{Go: paired(1.05, 1.12, 1.15)}, map[string]string{cold: "MISSED"}},
		{"wrk met", &report{Wrk: &wrkResult{RPS: map[string][]float64{"open": {100}, "authz": {90}, "go-jwt-middleware": {30}}}},
			map[string]string{wrkOpen: "MET", wrkGoJWT: "MET"}},
		{"wrk missed", &report{Wrk: &wrkResult{RPS: map[string][]float64{"open": {100}, "authz": {80}, "go-jwt-middleware": {30}}}},
			map[string]string{wrkOpen: "MISSED", wrkGoJWT: "MISSED"}},
		// Per-round ratios 0.9, 0.9, 0.5: MET, though the medians' ratio (90/150) is 0.6.
		{"wrk ratios within rounds", &report{Wrk: &wrkResult{RPS: map[string][]float64{"open": {100, 200, 150}, "authz": {90, 180, 75}, "go-jwt-middleware": {10, 20, 15}}}},
			map[string]string{wrkOpen: "MET", wrkGoJWT: "MET"}},
		{"invoice met", &report{Stack: &stackResult{Invoice: &invoiceLatency{Clients: 50, Invoice: ds(10, 20, 49)}}}, map[string]string{inv: "MET"}},
		{"invoice slow", &report{Stack: &stackResult{Invoice: &invoiceLatency{Clients: 50, Invoice: ds(10, 20, 51)}}}, map[string]string{inv: "MISSED"}},
		{"invoice missing ones", &report{Stack: &stackResult{Invoice: &invoiceLatency{Clients: 50, Missing: 1, Invoice: ds(10)}}}, map[string]string{inv: "MISSED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := status(tt.r)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: %s, want %s", k, got[k], v)
				}
			}
		})
	}
}

func TestCreateShare(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		s      *stackResult
		share  float64
		ok     bool
		target string // the targets table's value
	}{
		{"no stack", nil, 0, false, ""},
		{"both stages", &stackResult{Stages: []stage{{Name: "orders-healthz", RPS: 30000}, {Name: "orders-read", RPS: 9000}, {Name: "orders-create", RPS: 1440}}},
			0.16, true, "0.16 (1440 / 9000 req/s)"},
		// Every create failed: a measured share of 0, not a missing figure.
		{"no create succeeded", &stackResult{Stages: []stage{{Name: "orders-read", RPS: 9000}, {Name: "orders-create"}}}, 0, true, "0.00 (0 / 9000 req/s)"},
		{"no read stage", &stackResult{Stages: []stage{{Name: "orders-create", RPS: 1440}}}, 0, false, ""},
		{"no create stage", &stackResult{Stages: []stage{{Name: "orders-read", RPS: 9000}}}, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			share, _, _, ok := tt.s.createShare()
			if ok != tt.ok || abs(share-tt.share) > 1e-9 {
				t.Fatalf("createShare = %v, %v; want %v, %v", share, ok, tt.share, tt.ok)
			}
			if !tt.ok {
				return
			}
			for _, tg := range (&report{Stack: tt.s}).targets() {
				if tg.What == createShareWhat && (tg.Value != tt.target || tg.status() != "INFO") {
					t.Fatalf("target = %q %s, want %q INFO", tg.Value, tg.status(), tt.target)
				}
			}
		})
	}
}

func TestMarkdownExchangeAndStack(t *testing.T) {
	t.Parallel()
	res, err := parseGoBench(goOut)
	if err != nil {
		t.Fatal(err)
	}
	round, err := parseGoBench(goOut)
	if err != nil {
		t.Fatal(err)
	}
	r := &report{
		Machine: machine{BusyStart: -1},
		Go:      &goBench{Results: res, Rounds: []map[string]benchStat{round}},
		Stack: &stackResult{
			Clients: 50,
			Stages:  []stage{{Name: "orders-read", RPS: 9000, Success: 1}, {Name: "orders-create", RPS: 1440, Success: 1}},
			RSSIdle: map[string]int64{"tts": 14 * 1024, "users": 15 * 1024}, RSSLoad: map[string]int64{"tts": 18 * 1024},
		},
	}
	markdownHas(t, r,
		"| NATSRequest/authz-exchanged | 151000 | 10890 | 80 | NATSRequest/raw |",
		"| uncached | 905195 | 33852 | 262 |",
		"| cached | 1506 | 0 | 0 |",
		"A cache hit is **601× faster** than an exchange",
		"**orders-create reached 0.16 of orders-read's req/s** (1440 against 9000)",
		"| tts | 14.0 MiB | 18.0 MiB | 1.3× |",
		"| #13 | "+createShareWhat+" | 0.16 (1440 / 9000 req/s) | **INFO** |",
	)
	// Without the exchange benchmark the section is left out, not empty.
	delete(res, "Exchange/uncached")
	delete(res, "Exchange/cached")
	if md := r.markdown(nil, func(s string) string { return s }); strings.Contains(md, "Transaction token exchange") {
		t.Error("an exchange section without its benchmark")
	}
}

func TestServiceLists(t *testing.T) {
	t.Parallel()
	// Every service process devstack starts is sampled and reported, and its
	// static binary and image are sized.
	for _, name := range serviceNames() {
		if !slices.ContainsFunc(artifacts, func(a struct{ bin, image string }) bool { return a.bin == name }) {
			t.Errorf("service %s is not among the sized artifacts", name)
		}
	}
	if !slices.Contains(serviceNames(), "tts") {
		t.Errorf("serviceNames() = %v, want the TTS among them", serviceNames())
	}
}

func TestGoBenchPkgs(t *testing.T) {
	t.Parallel()
	// Each entry names a module (its own go.mod, so go test -c builds it in
	// its own module) and a package inside it.
	root := filepath.Join("..", "..")
	for _, p := range goBenchPkgs {
		if _, err := os.Stat(filepath.Join(root, p.Dir, "go.mod")); err != nil {
			t.Errorf("%s is not a module directory: %v", p.Dir, err)
		}
		if fi, err := os.Stat(filepath.Join(root, p.Dir, p.Pkg)); err != nil || !fi.IsDir() {
			t.Errorf("%s/%s is not a package directory: %v", p.Dir, p.Pkg, err)
		}
	}
	if got, want := goBenchModules(), "pkg/authz, services/tts, pkg/platform"; got != want {
		t.Errorf("goBenchModules() = %q, want %q", got, want)
	}
}

func ds(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPct(t *testing.T) {
	t.Parallel()
	d := ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 5 * time.Millisecond}, {99, 10 * time.Millisecond}, {0, time.Millisecond}, {100, 10 * time.Millisecond}} {
		if got := pct(d, tt.p); got != tt.want {
			t.Errorf("pct(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if pct(nil, 99) != 0 {
		t.Error("pct of nothing must be 0")
	}
}

func TestRatioWithinRounds(t *testing.T) {
	t.Parallel()
	// Load drifts between rounds: per-round ratios stay put, while the ratio
	// of the medians (0.5 here) would not.
	g := &goBench{Rounds: []map[string]benchStat{
		{"raw": {NsOp: 100}, "authz": {NsOp: 110}},
		{"raw": {NsOp: 400}, "authz": {NsOp: 440}},
		{"raw": {NsOp: 100}, "authz": {NsOp: 800}},
		{"raw": {NsOp: 900}, "authz": {NsOp: 990}},
	}}
	got, ok := g.ratio("raw", "authz", speed)
	if !ok || abs(got-1/1.1) > 1e-9 {
		t.Fatalf("ratio = %v, %v; want %v", got, ok, 1/1.1)
	}
	if _, ok := g.ratio("raw", "missing", speed); ok {
		t.Fatal("a ratio with no data must report !ok")
	}
	if _, ok := (*goBench)(nil).ratio("raw", "authz", speed); ok {
		t.Fatal("nil bench must report !ok")
	}
}

func TestCPUBusy(t *testing.T) {
	t.Parallel()
	if _, _, ok := cpuTimes(); !ok {
		t.Skip("no /proc/stat on this system")
	}
	// Keep one core busy for the sample: the share must be seen, and stay a share.
	var stop atomic.Bool
	go func() {
		for !stop.Load() {
		}
	}()
	b := cpuBusy(t.Context(), 300*time.Millisecond)
	stop.Store(true)
	if b <= 0 || b > 1 {
		t.Fatalf("cpuBusy = %v, want a share in (0, 1] while a goroutine spins", b)
	}
}

const natsConnectOut = `pkg: github.com/authmesh/authmesh/pkg/platform/callout
BenchmarkNATSConnect/password-2                          	    5174	    200000 ns/op	   66219 B/op	     238 allocs/op
BenchmarkNATSConnect/password-websocket-2                	    4237	    250000 ns/op	   89053 B/op	     335 allocs/op
BenchmarkNATSConnect/callout-workload-cold-2             	     657	   1700000 ns/op	       540 x-callout-decision-us	  297725 B/op	    1880 allocs/op
BenchmarkNATSConnect/callout-workload-warm-2             	     802	   1600000 ns/op	       460 x-callout-decision-us	  288128 B/op	    1755 allocs/op
BenchmarkNATSConnect/callout-person-websocket-warm-2     	     816	   2000000 ns/op	       620 x-callout-decision-us	  187194 B/op	     883 allocs/op
PASS
`

func TestNATSConnectReport(t *testing.T) {
	t.Parallel()
	// Two rounds; the second runs everything twice as slow: ratios within
	// rounds hold.
	r1, err := parseGoBench(natsConnectOut)
	if err != nil {
		t.Fatal(err)
	}
	r2 := map[string]benchStat{}
	for k, v := range r1 {
		v.NsOp *= 2
		r2[k] = v
	}
	all, err := parseGoBench(natsConnectOut)
	if err != nil {
		t.Fatal(err)
	}
	r := &report{Machine: machine{BusyStart: -1}, Go: &goBench{Results: all, Rounds: []map[string]benchStat{r1, r2}}}
	if x, ok := r.Go.natsConnect("callout-workload-warm"); !ok || abs(x-8) > 1e-9 {
		t.Fatalf("warm ratio = %v, %v; want 8 (1600 µs / 200 µs)", x, ok)
	}
	if x, ok := r.Go.natsConnect("callout-person-websocket-warm"); !ok || abs(x-8) > 1e-9 {
		t.Fatalf("person ratio = %v, %v; want 8, against the password connect over WebSocket", x, ok)
	}
	if _, ok := r.Go.natsConnect("password"); ok {
		t.Fatal("the baseline has no ratio")
	}
	markdownHas(t, r,
		"### NATS connect: password against the auth callout",
		"| password | password user, plain configuration (TCP) | 200 µs |  | 66219 | 238 |  |  |",
		"| callout-workload-cold | orders' client-credentials token, a new one each time: signature and claims checked, JWKS cached | 1700 µs | 540 µs | 297725 | 1880 | password | 8.50× |",
		"| callout-person-websocket-warm | a person's access token over WebSocket (account LIVE), the same token again | 2000 µs | 620 µs | 187194 | 883 | password-websocket | 8.00× |",
		"| callout-jwks-cold | first connection after the callout starts: a new validator fetches the JWKS, then checks the token | — | — | — | — | password | not run |",
		"| #14 | "+natsConnectTargets[0].what+" | 8.00× (1600 µs / 200 µs) | **INFO** |",
		"| #14 | "+natsConnectTargets[2].what+" | — | **NOT MEASURED** |",
	)
	// Without the benchmark the section is left out, not empty.
	r.Go = &goBench{Results: map[string]benchStat{"Exchange/cached": {NsOp: 1}}}
	if md := r.markdown(nil, func(s string) string { return s }); strings.Contains(md, "NATS connect: password") {
		t.Error("a NATS connect section without its benchmark")
	}
}

// TestTracingMarkdown: the tracing section reports both sides' req/s and
// p99 side by side, each round, the loss against the target, how far apart
// the off stages are, and the spans the receiver got.
func TestTracingMarkdown(t *testing.T) {
	t.Parallel()
	tr := &tracingResult{Clients: 50, Spans: 24000, Exports: 60, OnCreated: 2000,
		Off: []stage{{RPS: 1100, Lat: ds(40, 50, 90)}, {RPS: 900, Lat: ds(40, 60, 95)}},
		On:  []stage{{RPS: 950, Lat: ds(45, 55, 100)}, {RPS: 850, Lat: ds(45, 65, 110)}}}
	markdownHas(t, (&report{Tracing: tr}),
		"## Tracing overhead (issue 16)",
		"off, on, on, off",
		"| off | 1000 | 50.0 ms | 95.0 ms | 1100, 900 |",
		"| on, 100 % sampled | 900 | 55.0 ms | 110.0 ms | 950, 850 |",
		"**Throughput lost with tracing on: 10.0 %** (900 against 1000 req/s), within the target of ≤ 10 %.",
		"range from\n900 to 1100 req/s, 20 % of their mean apart.",
		"24000 spans in 60 export requests for the 2000 orders the traced stacks created, warm-ups included (12.0 spans per order)",
	)
}

// markdownHas fails the test for each of want that r's report lacks, and
// then shows the report.
func markdownHas(t *testing.T, r *report, want ...string) {
	t.Helper()
	md := r.markdown(nil, func(s string) string { return s })
	for _, w := range want {
		if !strings.Contains(md, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("the report:\n%s", md)
	}
}

// TestDPoPMarkdown: the DPoP section gives the paired ratio and its floor,
// and issue 15's target row carries the floor beside the verdict.
func TestDPoPMarkdown(t *testing.T) {
	t.Parallel()
	paired := benchStat{NsOp: 190000, Metrics: map[string]float64{
		"x-of-target": 1.02, "x-of-target-median": 1.021, "ns-beyond-bearer+es256": 1500,
		"x-floor-of-target": 1.004, "x-floor-of-target-median": 1.001}}
	res := map[string]benchStat{"DPoP/dpop-cold-proof": {NsOp: 64000}, "DPoP/paired": paired}
	r := &report{Go: &goBench{Results: res, Rounds: []map[string]benchStat{res}}}
	markdownHas(t, r,
		"DPoP's cost is 1.020× the target",
		"is 1.004× the target by itself (by each call's median: floor 1.001×, DPoP 1.021×)",
		"| #15 | DPoP: cold proof + cached token ≤ 1.5× Bearer cached + one ES256 verify | 1.020× of the target (its floor, the signature check alone: 1.004×) | **MISSED** |",
	)
}

// TestTracingOrder: rounds alternate which of off and on goes first, so a
// drift over the run weighs on both alike, and the report says the order.
func TestTracingOrder(t *testing.T) {
	t.Parallel()
	got := (&tracingResult{Off: make([]stage, 4), On: make([]stage, 4)}).runOrder()
	if want := "off, on, on, off, off, on, on, off (drift"; !strings.HasPrefix(got, want) {
		t.Fatalf("run order %q; want it to start %q", got, want)
	}
	if got := (&tracingResult{Off: make([]stage, 1), On: make([]stage, 1)}).runOrder(); got != "off, on" {
		t.Fatalf("one round: %q", got)
	}
	var on int
	for _, o := range tracingOrder(3) {
		if o {
			on++
		}
	}
	if n := len(tracingOrder(3)); n != 6 || on != 3 {
		t.Fatalf("3 rounds: %d stages, %d on; want 6, 3", n, on)
	}
}
