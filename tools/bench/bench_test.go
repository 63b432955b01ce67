package main

import (
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
		{"nothing measured", &report{}, map[string]string{wrkOpen: "NOT MEASURED", wrkGoJWT: "NOT MEASURED", inv: "NOT MEASURED", cold: "NOT MEASURED"}},
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
