package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
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
	Results map[string]benchStat // key: e.g. "Validate/authz-cached"
	Raw     string               // go test's output, kept for the report's appendix
}

type benchStat struct {
	NsOp, BOp, AllocsOp float64
	Runs                int
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// runGoBench runs the authz and natsauth benchmarks in one go test invocation
// (workspace mode, the checkout's own code) and parses its output.
func runGoBench(ctx context.Context, o options) (*goBench, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	args := []string{"test", "-run", "^$", "-bench", "^Benchmark(Validate|EchoHTTP|NATSRequest)$",
		"-benchmem", "-count", fmt.Sprint(o.count), "-benchtime", o.benchtime, ".", "./natsauth"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(o.root, "pkg", "authz")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	gb := &goBench{Cmd: "cd pkg/authz && go " + strings.Join(quoteArgs(args), " ")}
	err := cmd.Run()
	gb.Raw = out.String()
	res, perr := parseGoBench(gb.Raw)
	gb.Results = res
	if err != nil {
		return gb, fmt.Errorf("go test: %w", err)
	}
	return gb, perr
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$|()") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return q
}

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
		out[name] = benchStat{
			NsOp: ns, BOp: median(units["B/op"]), AllocsOp: median(units["allocs/op"]),
			Runs: max(len(units["sec/op"]), len(units["ns/op"])),
		}
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
