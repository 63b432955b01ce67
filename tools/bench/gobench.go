package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

// goBench holds the medians of each Go sub-benchmark over -count runs.
type goBench struct {
	Cmd     string
	Results map[string]benchStat // medians over rounds; key: e.g. "Validate/authz-cached"
	Rounds  []map[string]benchStat
	Raw     string // go test's output, kept for the report's appendix
}

type benchStat struct {
	NsOp, BOp, AllocsOp float64
	Runs                int
	// Metrics are the benchmark's own b.ReportMetric units (medians), such
	// as "x-baseline-time".
	Metrics map[string]float64
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// goBenchPkgs are the test binaries runGoBench builds and the benchmarks it
// runs in each. Dir is the module's directory under the root (each module
// builds its own test binary, in workspace mode); Pkg is relative to it.
var goBenchPkgs = []struct{ Dir, Pkg, Bench string }{
	{"pkg/authz", ".", "^Benchmark(Validate|EchoHTTP|DPoP|DecisionSpan)$"},
	{"pkg/authz", "./natsauth", "^BenchmarkNATSRequest$"},
	{"services/tts", "./internal/service", "^BenchmarkExchange$"},
	{"pkg/platform", "./callout", "^BenchmarkNATSConnect$"},
	{"pkg/platform", "./telemetry", "^BenchmarkExport$"},
}

// runGoBench compiles the test binaries of goBenchPkgs (workspace mode, the
// checkout's own code) and runs them o.count times, one -count=1 round after
// another: each round runs a benchmark's variants back to back, so a ratio
// taken within a round sees the same machine load on both sides, which
// -count=N (all runs of one variant, then all of the next) does not give.
func runGoBench(ctx context.Context, o options) (*goBench, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "authmesh-bench-go-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for i, p := range goBenchPkgs {
		if err := goCmd(ctx, filepath.Join(o.root, filepath.FromSlash(p.Dir)), "test", "-c", "-o", filepath.Join(dir, fmt.Sprintf("%d.test", i)), p.Pkg); err != nil {
			return nil, fmt.Errorf("go test -c %s in %s: %w", p.Pkg, p.Dir, err)
		}
	}
	gb := &goBench{Cmd: fmt.Sprintf("cd <module> && go test -c <pkg> (%s), then %d rounds of: <pkg>.test -test.run '^$' -test.bench '<benchmarks>' -test.benchmem -test.count 1 -test.benchtime %s",
		goBenchModules(), o.count, o.benchtime)}
	var all strings.Builder
	for range o.count {
		var round strings.Builder
		for i, p := range goBenchPkgs {
			cmd := exec.CommandContext(ctx, filepath.Join(dir, fmt.Sprintf("%d.test", i)), "-test.run", "^$", "-test.bench", p.Bench,
				"-test.benchmem", "-test.count", "1", "-test.benchtime", o.benchtime)
			cmd.Dir = filepath.Join(o.root, filepath.FromSlash(p.Dir), p.Pkg) // testdata is relative to the package
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, os.Stderr
			err := cmd.Run()
			round.Write(out.Bytes())
			if err != nil {
				gb.Raw = all.String() + round.String()
				return gb, fmt.Errorf("%s benchmarks: %w", path.Join(p.Dir, p.Pkg), err)
			}
		}
		res, err := parseGoBench(round.String())
		if err != nil {
			return gb, err
		}
		gb.Rounds = append(gb.Rounds, res)
		all.WriteString(round.String())
	}
	gb.Raw = all.String()
	res, err := parseGoBench(gb.Raw)
	gb.Results = res
	return gb, err
}

// goBenchModules lists the modules of goBenchPkgs once each, in order.
func goBenchModules() string {
	var dirs []string
	for _, p := range goBenchPkgs {
		if !slices.Contains(dirs, p.Dir) {
			dirs = append(dirs, p.Dir)
		}
	}
	return strings.Join(dirs, ", ")
}

// ratio is the median over rounds of f(a, b), a and b from the same round.
func (g *goBench) ratio(a, b string, f func(a, b benchStat) float64) (float64, bool) {
	if g == nil {
		return 0, false
	}
	var v []float64
	for _, r := range g.Rounds {
		x, ok1 := r[a]
		y, ok2 := r[b]
		if ok1 && ok2 && x.NsOp > 0 && y.NsOp > 0 {
			v = append(v, f(x, y))
		}
	}
	return median(v), len(v) > 0
}

// metric is the median over rounds of a benchmark's own metric (see
// benchStat.Metrics); a benchmark that pairs its variants within each call
// loop reports its ratio this way.
func (g *goBench) metric(name, unit string) (float64, bool) {
	if g == nil {
		return 0, false
	}
	var v []float64
	for _, r := range g.Rounds {
		if x, ok := r[name].Metrics[unit]; ok && x > 0 {
			v = append(v, x)
		}
	}
	return median(v), len(v) > 0
}

// speed is how many times faster b is than a; share is a's time over b's,
// i.e. b's throughput as a fraction of a's.
func speed(a, b benchStat) float64 { return a.NsOp / b.NsOp }

// parseGoBench reads Go benchmark output with x/perf's benchfmt and keeps the
// median of each unit per benchmark (medians resist the outliers a shared
// machine produces).
func parseGoBench(text string) (map[string]benchStat, error) {
	r := benchfmt.NewReader(strings.NewReader(text), "go test")
	vals := map[string]map[string][]float64{}
	for r.Scan() {
		res, ok := r.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		name := strings.TrimPrefix(procsSuffix.ReplaceAllString(string(res.Name.Full()), ""), "Benchmark")
		if vals[name] == nil {
			vals[name] = map[string][]float64{}
		}
		for _, v := range res.Values {
			vals[name][v.Unit] = append(vals[name][v.Unit], v.Value)
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("no benchmark results in go test's output")
	}
	out := map[string]benchStat{}
	for name, units := range vals {
		ns := median(units["sec/op"]) * 1e9
		if ns == 0 {
			ns = median(units["ns/op"])
		}
		st := benchStat{
			NsOp: ns, BOp: median(units["B/op"]), AllocsOp: median(units["allocs/op"]),
			Runs: max(len(units["sec/op"]), len(units["ns/op"])),
		}
		for u, v := range units {
			if strings.HasPrefix(u, "x-") {
				if st.Metrics == nil {
					st.Metrics = map[string]float64{}
				}
				st.Metrics[u] = median(v)
			}
		}
		out[name] = st
	}
	return out, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// goCmd runs the go command with args in dir; a failure carries its output.
func goCmd(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}
