package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkVariants are served by cmd/echoserver, one port each, in this order.
var wrkVariants = []string{"open", "authz", "go-jwt-middleware"}

type wrkResult struct {
	Threads, Conns int
	// Pinning says how server and wrk shared the CPUs ("" = not pinned).
	Pinning  string
	Duration time.Duration
	Rounds   int
	// Per variant: requests/s of each round, and the latency percentiles of
	// the median round.
	RPS map[string][]float64
	// Server CPU time (user+system, from /proc) per request, per round: the
	// cost of each variant independent of how much CPU the machine's other
	// load left to the server during its run.
	CPUPerReq map[string][]time.Duration
	Latency   map[string]map[string]time.Duration // "50%" → d
	Profile   string                              // top of a CPU profile of the server under authz load, if taken
}

func (w *wrkResult) median(v string) float64 { return median(w.RPS[v]) }

// ratio is the median over rounds of a's req/s over b's in the same round:
// the machine's other load drifts between rounds, far less within one.
func (w *wrkResult) ratio(a, b string) float64 {
	var r []float64
	for i := range min(len(w.RPS[a]), len(w.RPS[b])) {
		if w.RPS[b][i] > 0 {
			r = append(r, w.RPS[a][i]/w.RPS[b][i])
		}
	}
	return median(r)
}

// runWrk builds and starts cmd/echoserver, then runs wrk against each variant
// in interleaved rounds so that drift from the machine's other load hits all
// three alike.
func runWrk(ctx context.Context, o options, log *slog.Logger) (*wrkResult, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, errors.New("wrk is not installed; on Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "authmesh-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "echoserver")
	if err := goCmd(ctx, o.root, "build", "-o", bin, "./tools/bench/cmd/echoserver"); err != nil {
		return nil, fmt.Errorf("building cmd/echoserver: %w", err)
	}
	// With two or more CPUs the server gets CPU 0 (and GOMAXPROCS=1) and wrk
	// the others: a load generator competing with the server for the same
	// cores caps every variant by its own cost and compresses the ratios.
	threads, srvCmd, wrkPrefix, pinning := 2, []string{bin}, []string(nil), ""
	if n := runtime.NumCPU(); n >= 2 {
		if taskset, err := exec.LookPath("taskset"); err == nil {
			threads = n - 1
			srvCmd = []string{taskset, "-c", "0", bin}
			wrkPrefix = []string{taskset, "-c", fmt.Sprintf("1-%d", n-1)}
			cpus := "CPU 1"
			if n > 2 {
				cpus = fmt.Sprintf("CPUs 1–%d", n-1)
			}
			pinning = "server on CPU 0 with GOMAXPROCS=1, wrk on " + cpus + " (taskset)"
		}
	}
	srv := exec.Command(srvCmd[0], srvCmd[1:]...)
	if pinning != "" {
		srv.Env = append(os.Environ(), "GOMAXPROCS=1")
	}
	srv.Stderr = os.Stderr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	var addrs map[string]string
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("echoserver: no address line: %w", err)
	}
	if err := json.Unmarshal(line, &addrs); err != nil {
		return nil, fmt.Errorf("echoserver: %w", err)
	}
	token := addrs["token"]
	for _, v := range wrkVariants {
		if err := probe(ctx, addrs[v], token); err != nil {
			return nil, fmt.Errorf("echoserver %s: %w", v, err)
		}
	}

	res := &wrkResult{Threads: threads, Conns: 32, Pinning: pinning, Duration: o.wrkDur, Rounds: o.wrkRounds,
		RPS: map[string][]float64{}, CPUPerReq: map[string][]time.Duration{}, Latency: map[string]map[string]time.Duration{}}
	lat := map[string][]map[string]time.Duration{}
	for round := range o.wrkRounds {
		for _, v := range wrkVariants {
			args := []string{"-t", fmt.Sprint(res.Threads), "-c", fmt.Sprint(res.Conns),
				"-d", fmt.Sprintf("%ds", max(1, int(o.wrkDur.Seconds()))), "--latency",
				// The same request bytes for all three; open ignores the header.
				"-H", "Authorization: Bearer " + token, addrs[v]}
			cpu0, _ := procCPU(srv.Process.Pid)
			cmd := append(append(wrkPrefix[:len(wrkPrefix):len(wrkPrefix)], wrk), args...)
			out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("wrk %s: %v\n%s", v, err, out)
			}
			cpu1, _ := procCPU(srv.Process.Pid)
			rps, l, err := parseWrk(string(out))
			if err != nil {
				return nil, fmt.Errorf("wrk %s: %w\n%s", v, err, out)
			}
			var perReq time.Duration
			if n := wrkRequests(string(out)); n > 0 {
				perReq = (cpu1 - cpu0) / time.Duration(n)
			}
			log.Info("wrk", "round", round+1, "variant", v, "req/s", int(rps), "p99", l["99%"], "server-cpu/req", perReq)
			res.RPS[v] = append(res.RPS[v], rps)
			res.CPUPerReq[v] = append(res.CPUPerReq[v], perReq)
			lat[v] = append(lat[v], l)
		}
	}
	for _, v := range wrkVariants {
		// Percentiles of the round whose throughput is the median one.
		m := res.median(v)
		best := 0
		for i, r := range res.RPS[v] {
			if abs(r-m) < abs(res.RPS[v][best]-m) {
				best = i
			}
		}
		res.Latency[v] = lat[v][best]
	}
	// A CPU profile of the server while wrk drives the authz variant: it names
	// where the time goes when a ratio falls short.
	if p, err := profileUnderLoad(ctx, wrk, addrs["pprof"], addrs["authz"], token, dir); err == nil {
		res.Profile = p
	} else {
		log.Warn("profile", "err", err)
	}
	return res, nil
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func probe(ctx context.Context, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

var wrkReqs = regexp.MustCompile(`(?m)^\s*(\d+) requests in`)

func wrkRequests(out string) int64 {
	m := wrkReqs.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// cpuRatio is the median over rounds of a's server CPU per request over b's.
func (w *wrkResult) cpuRatio(a, b string) float64 {
	var r []float64
	for i := range min(len(w.CPUPerReq[a]), len(w.CPUPerReq[b])) {
		if w.CPUPerReq[b][i] > 0 {
			r = append(r, float64(w.CPUPerReq[a][i])/float64(w.CPUPerReq[b][i]))
		}
	}
	return median(r)
}

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`(?m)Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`(?m)Socket errors:.*`)
)

// parseWrk reads wrk's text output (--latency); non-2xx answers make the run
// invalid, since a fast 401 would flatter the auth layers.
func parseWrk(out string) (float64, map[string]time.Duration, error) {
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		return 0, nil, fmt.Errorf("%s non-2xx responses", m[1])
	}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return 0, nil, errors.New("no Requests/sec line")
	}
	rps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, nil, err
	}
	lat := map[string]time.Duration{}
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		f, err := strconv.ParseFloat(p[2], 64)
		if err != nil {
			return 0, nil, err
		}
		unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[p[3]]
		lat[p[1]+"%"] = time.Duration(f * unit)
	}
	if len(lat) != 4 {
		return 0, nil, errors.New("no latency distribution (wrk --latency)")
	}
	if s := wrkSockErr.FindString(out); s != "" && !strings.Contains(s, "connect 0, read 0, write 0, timeout 0") {
		return 0, nil, errors.New(s)
	}
	return rps, lat, nil
}

// profileUnderLoad takes a 3 s CPU profile of cmd/echoserver during a wrk run
// against url and returns `go tool pprof -top` of it.
func profileUnderLoad(ctx context.Context, wrk, pprofURL, url, token, dir string) (string, error) {
	w := exec.CommandContext(ctx, wrk, "-t", "2", "-c", "32", "-d", "5s", "-H", "Authorization: Bearer "+token, url)
	if err := w.Start(); err != nil {
		return "", err
	}
	defer w.Wait()
	time.Sleep(time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pprofURL+"profile?seconds=3", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	prof := filepath.Join(dir, "cpu.pprof")
	f, err := os.Create(prof)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", prof).Output()
	if err != nil {
		return "", err
	}
	// Keep the table, not the header naming the temporary file and build id.
	text := string(out)
	if i := strings.Index(text, "Duration:"); i >= 0 {
		text = text[i:]
	}
	return text, nil
}
