package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
)

type machine struct {
	CPU, Kernel, GoVersion string
	Cores                  int
	LoadStart, LoadEnd     string
	// BusyStart is the share of all CPUs in use during the seconds just
	// before the run (-1 if unknown). Unlike the load average, a decaying mean
	// over a minute, it is not raised by the build that make bench runs first.
	BusyStart float64
}

type report struct {
	Machine machine
	Started time.Time
	Elapsed time.Duration
	Go      *goBench
	Wrk     *wrkResult
	Stack   *stackResult
	Tracing *tracingResult
	Sizes   sizeInfo
	Notes   []string
}

func machineInfo(ctx context.Context) machine {
	m := machine{Cores: runtime.NumCPU(), LoadStart: loadAvg(), CPU: "unknown", BusyStart: cpuBusy(ctx, 2*time.Second)}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	// The toolchain that builds the benchmarks and services, not the one that
	// built this runner (they are the same under `go run`, but say which).
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	} else {
		m.GoVersion = runtime.Version()
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuBusy samples /proc/stat twice, d apart, and returns the share of CPU
// time spent other than idle or waiting for I/O over all the host's CPUs
// (not only those this process may use), or -1.
func cpuBusy(ctx context.Context, d time.Duration) float64 {
	busy0, total0, ok := cpuTimes()
	if !ok {
		return -1
	}
	select {
	case <-ctx.Done():
		return -1
	case <-time.After(d):
	}
	busy1, total1, ok := cpuTimes()
	if !ok || total1 <= total0 {
		return -1
	}
	return float64(busy1-busy0) / float64(total1-total0)
}

// cpuTimes reads the aggregate "cpu" line of /proc/stat: the ticks spent busy
// and in total.
func cpuTimes() (busy, total uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	// user nice system idle iowait irq softirq steal; guest and guest_nice,
	// after them, are counted in user and nice already.
	for i, s := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, true
}

// artifacts are the components whose static binary (bin/<bin>) and image
// (authmesh/<image>:dev) the report sizes.
var artifacts = []struct{ bin, image string }{
	{"users", "users"}, {"orders", "orders"}, {"billing", "billing"}, {"tts", "tts"}, {"devtenant", "devtenant"}, {"nats-server", "nats"},
}

type sizeInfo struct {
	Static map[string]int64 // bin/<name>: the static, stripped binaries the images copy
	Images map[string]int64 // repository:tag → bytes
}

// sizes reads the static binaries under bin/ (built by make bench, `make up`
// or deploy/compose-smoke.sh) and the sizes of the images make bench builds
// with `make k8s-images` when Docker runs (authmesh/<name>:dev).
func sizes(ctx context.Context, root string) sizeInfo {
	s := sizeInfo{Static: map[string]int64{}, Images: map[string]int64{}}
	for _, a := range artifacts {
		if fi, err := os.Stat(filepath.Join(root, "bin", a.bin)); err == nil && fi.Mode().IsRegular() {
			s.Static[a.bin] = fi.Size()
		}
	}
	if _, err := exec.LookPath("docker"); err != nil {
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "images", "--format", "{{.Repository}}:{{.Tag}}").Output()
	if err != nil {
		return s
	}
	for _, ref := range strings.Fields(string(out)) {
		// Only the images make bench builds from this checkout (make
		// k8s-images): others, compose's included, may hold older code.
		name, ok := strings.CutPrefix(ref, "authmesh/")
		if !ok || !slices.ContainsFunc(artifacts, func(a struct{ bin, image string }) bool { return a.image+":dev" == name }) {
			continue
		}
		b, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Size}}", ref).Output()
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			s.Images[ref] = n
		}
	}
	return s
}

// target is one goal from issue 8, issue 2 §4 or issue 13 and what this run
// measured. An Info row is a figure an issue asks the report to state, with
// no threshold to meet.
type target struct {
	Issue, What string
	Value       string
	Met         bool
	Measured    bool
	Info        bool
}

func (t target) status() string {
	switch {
	case !t.Measured:
		return "NOT MEASURED"
	case t.Info:
		return "INFO"
	case t.Met:
		return "MET"
	default:
		return "MISSED"
	}
}

func (r *report) targets() []target {
	var ts []target
	add := func(issue, what string, measured bool, value string, met bool) {
		ts = append(ts, target{Issue: issue, What: what, Measured: measured, Value: value, Met: met})
	}
	if w := r.Wrk; w != nil {
		ao, ag := w.ratio("authz", "open"), w.ratio("authz", "go-jwt-middleware")
		add("#8", "wrk: authz / open throughput ≥ 0.85", ao > 0, fmt.Sprintf("%.2f", ao), ao >= 0.85)
		add("#8", "wrk: authz / go-jwt-middleware throughput ≥ 3×", ag > 0, fmt.Sprintf("%.2f×", ag), ag >= 3)
	} else {
		add("#8", "wrk: authz / open throughput ≥ 0.85", false, "", false)
		add("#8", "wrk: authz / go-jwt-middleware throughput ≥ 3×", false, "", false)
	}
	g := func(n string) (benchStat, bool) {
		if r.Go == nil {
			return benchStat{}, false
		}
		s, ok := r.Go.Results[n]
		return s, ok && s.NsOp > 0
	}
	// Ratios are medians of per-round ratios (see runGoBench).
	natsShare, ok := r.Go.ratio("NATSRequest/raw", "NATSRequest/authz", speed)
	add("#8", "NATS: authz / raw throughput ≥ 0.8", ok, fmt.Sprintf("%.2f", natsShare), natsShare >= 0.8)
	cachedX, ok := r.Go.ratio("Validate/baseline-go-jwt-middleware", "Validate/authz-cached", speed)
	add("#8, #2", "validate: cached ≥ 20× faster than the baseline", ok, fmt.Sprintf("%.1f×", cachedX), cachedX >= 20)
	cached, ok := g("Validate/authz-cached")
	add("#2", "validate: cached ≤ 20 allocs/op", ok, fmt.Sprintf("%.0f", cached.AllocsOp), cached.AllocsOp <= 20)
	// The paired sub-benchmark alternates both call by call; the ratio of
	// the two sequential sub-benchmarks moves with the machine's load
	// between them (both are in the report).
	coldX, ok := r.Go.metric("Validate/paired-cold-vs-baseline", "x-baseline-time")
	add("#2", "validate: cold ≤ 1.1× the baseline's time (paired)", ok, fmt.Sprintf("%.2f×", coldX), coldX <= 1.1)
	httpShare, ok := r.Go.ratio("EchoHTTP/open", "EchoHTTP/authz", speed)
	add("#2", "Echo over HTTP (in-process client): authz ≥ 85% of open", ok, fmt.Sprintf("%.0f%%", 100*httpShare), httpShare >= 0.85)
	httpX, ok := r.Go.ratio("EchoHTTP/go-jwt-middleware", "EchoHTTP/authz", speed)
	add("#2", "Echo over HTTP (in-process client): authz ≥ 2× go-jwt-middleware", ok, fmt.Sprintf("%.2f×", httpX), httpX >= 2)
	if s := r.Stack; s != nil && s.Invoice != nil && len(s.Invoice.Invoice) > 0 {
		p := pct(s.Invoice.Invoice, 99)
		add("#8, #13", fmt.Sprintf("order → invoice p99 < 50 ms at %d clients", s.Invoice.Clients), true, ms(p), p < 50*time.Millisecond && s.Invoice.Missing == 0)
	} else {
		add("#8, #13", "order → invoice p99 < 50 ms at 50 clients", false, "", false)
	}
	if share, create, read, ok := r.Stack.createShare(); ok {
		ts = append(ts, target{Issue: "#13", What: createShareWhat, Measured: true, Info: true,
			Value: fmt.Sprintf("%.2f (%.0f / %.0f req/s)", share, create, read)})
	} else {
		ts = append(ts, target{Issue: "#13", What: createShareWhat, Info: true})
	}
	for _, c := range natsConnectTargets {
		x, ok := r.Go.natsConnect(c.variant)
		var v string
		if ok {
			v = fmt.Sprintf("%.2f× (%s / %s)", x, us(r.Go.Results["NATSConnect/"+c.variant].NsOp), us(r.Go.Results["NATSConnect/password"].NsOp))
		}
		ts = append(ts, target{Issue: "#14", What: c.what, Measured: ok, Info: true, Value: v})
	}
	loss, on, off, ok := r.Tracing.loss()
	add("#16", tracingTargetWhat, ok, fmt.Sprintf("%.1f%% (%.0f / %.0f req/s)", 100*loss, on, off), ok && loss <= tracingLossTarget)
	x, ok := r.Go.metric("DPoP/paired", "x-of-target") // the three timed call by call: see BenchmarkDPoP
	v := fmt.Sprintf("%.3f× of the target", x)
	if fl, ok := r.Go.metric("DPoP/paired", "x-floor-of-target"); ok {
		v += fmt.Sprintf(" (its floor, the signature check alone: %.3f×)", fl)
	}
	add("#15", dpopTargetWhat, ok, v, ok && x <= 1)
	if s := r.Stack; s != nil && len(s.RSSIdle) > 0 {
		for _, name := range serviceNames() {
			kb := s.RSSIdle[name]
			add("#8", fmt.Sprintf("idle RSS < 40 MiB: %s", name), kb > 0, mib(kb*1024), kb > 0 && kb < 40*1024)
		}
	} else {
		add("#8", "idle RSS < 40 MiB per service", false, "", false)
	}
	return ts
}

// natsConnectTargets are the figures issue 14 asks make bench to report:
// NATS connect time with the callout, cold and warm, next to a password
// connect.
var natsConnectTargets = []struct{ variant, what string }{
	{"callout-workload-warm", "NATS connect through the callout, token cached / password connect (informational)"},
	{"callout-workload-cold", "NATS connect through the callout, new token / password connect (informational)"},
	{"callout-jwks-cold", "NATS connect through the callout, first after its start (JWKS fetch) / password connect (informational)"},
}

// dpopTargetWhat is issue 15's target for DPoP validation (BenchmarkDPoP).
const dpopTargetWhat = "DPoP: cold proof + cached token ≤ 1.5× Bearer cached + one ES256 verify"

// tracingTargetWhat is issue 16's target (tracing.go).
const tracingTargetWhat = "stack: orders-create throughput lost with tracing at 100 % sampling ≤ 10 %"

const createShareWhat = "stack: orders-create req/s as a share of orders-read's (informational)"

// createShare is the create stage's successful req/s over the read stage's,
// both from this run: what a write through the mesh (a transaction token,
// the profile over NATS, a KV write, an event) costs next to a read that
// stays inside orders.
func (s *stackResult) createShare() (share, create, read float64, ok bool) {
	if s == nil {
		return 0, 0, 0, false
	}
	var ran bool
	for _, st := range s.Stages {
		switch st.Name {
		case "orders-create":
			create, ran = st.RPS, true
		case "orders-read":
			read = st.RPS
		}
	}
	if !ran || read <= 0 {
		return 0, create, read, false
	}
	return create / read, create, read, true
}

// serviceNames are the stack's service processes, in devstack's start order.
func serviceNames() []string {
	names := make([]string, len(devstack.Services))
	for i, s := range devstack.Services {
		names[i] = s.Name
	}
	return names
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func slicesSort(d []time.Duration) { slices.Sort(d) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// under resolves p against the repository root unless it is absolute.
func under(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

func (r *report) write(o options) error {
	charts, out := under(o.root, o.charts), under(o.root, o.out)
	if err := os.MkdirAll(charts, 0o755); err != nil {
		return err
	}
	imgs, err := r.charts(charts)
	if err != nil {
		return fmt.Errorf("charts: %w", err)
	}
	rel := func(name string) string {
		p, err := filepath.Rel(filepath.Dir(out), filepath.Join(charts, name))
		if err != nil {
			return filepath.Join(o.charts, name)
		}
		return filepath.ToSlash(p)
	}
	return os.WriteFile(out, []byte(r.markdown(imgs, rel)), 0o644)
}
