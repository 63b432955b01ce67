package main

import (
	"bytes"
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/authmesh/authmesh/tools/devstack"
)

const (
	pollInterval = 5 * time.Millisecond
	// invoicePerClient bounds the latency stage (50×20 = 1000 orders);
	// invoicePerClientLimited keeps it to 50×8 = 400 orders, at most 800
	// Management API calls, inside one rate-limit window (see runStack); the
	// pass under perf that follows it takes 50×1 then.
	invoicePerClient        = 20
	drainTimeout            = 60 * time.Second
	invoicePerClientLimited = 8
	invoicePerClientProfile = 5
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
	Profile    string // perf report of orders and billing during the latency stage
	// From the create stage's start until billing listed the invoice of its
	// last order, and the invoices per second that makes.
	Drain         time.Duration
	InvoiceRate   float64
	DrainTimedOut bool
}

type stage struct {
	Name, Desc string
	Baseline   string // name of the stage it is compared with
	RPS        float64
	Success    float64
	Requests   uint64
	Codes      map[string]int
	Errors     []string
	// Throughput over the stretch before the first failed request, and how
	// far into the stage that failure came (0: none failed).
	RPSBeforeFail float64
	FirstFail     time.Duration
	lastBody      []byte // body of the last successful response
	P50, P95      time.Duration
	P99, Max      time.Duration
	Lat           []time.Duration
}

type invoiceLatency struct {
	Clients, Orders, Missing int
	PerClient                int
	Failures                 map[string]int // why an order or its invoice is missing
	Poll                     time.Duration
	ExtraPolls               int             // GETs beyond the first, when billing did not list a stored invoice yet
	Create, Invoice, E2E     []time.Duration // sorted
}

// runStack starts the embedded stack through tools/devstack with a throwaway
// data directory, measures it under load and stops it.
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

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready := make(chan devstack.Ready, 1)
	done := make(chan error, 1)
	start := time.Now()
	cold := newColdStartWatcher(binDir)
	go cold.watch(runCtx)
	go func() {
		done <- devstack.Run(runCtx, devstack.Config{
			Root: o.root, DataDir: data, Out: logf, NoBanner: true,
			ReadyTimeout: 4 * time.Minute,
			OnReady:      func(r devstack.Ready) { ready <- r },
		})
	}()
	var r devstack.Ready
	select {
	case r = <-ready:
	case err := <-done:
		return nil, fmt.Errorf("devstack: %v (log: %s)", err, tail(logf.Name()))
	}
	res := &stackResult{Clients: o.clients, StackReady: time.Since(start), ColdStart: cold.result(),
		RSSIdle: map[string]int64{}, RSSLoad: map[string]int64{}, Binaries: map[string]int64{}}
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			log.Warn("devstack did not stop within 20s")
		}
	}()
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
	// Each order costs the users service two Management API calls to
	// devtenant, which (like Auth0) allows 1000 per minute per client in a
	// fixed window; the window opens at the first call, about now.
	windowStart := time.Now()
	id, err := createOrder(ctx, http.DefaultClient, orders, auth, body)
	if err != nil {
		return res, fmt.Errorf("creating a first order: %w", err)
	}
	stages := []struct {
		name, desc, baseline string
		t                    vegeta.Target
	}{
		{"orders-healthz", "GET /healthz on orders (no auth)", "", vegeta.Target{Method: "GET", URL: orders + "/healthz"}},
		{"orders-read", "GET /v1/orders/{id} on orders (alice's token, read:orders)", "orders-healthz",
			vegeta.Target{Method: "GET", URL: orders + "/v1/orders/" + id, Header: auth}},
		{"orders-create", "POST /v1/orders (alice's token exchanged for a transaction token, cached; profile over NATS, KV write, JetStream event)", "orders-healthz",
			vegeta.Target{Method: "POST", URL: orders + "/v1/orders", Header: auth, Body: body}},
	}
	var createStart time.Time
	for _, s := range stages {
		createStart = time.Now() // the last stage is the create stage
		st := attack(ctx, s.t, o.clients, o.stageDur)
		st.Name, st.Desc, st.Baseline = s.name, s.desc, s.baseline
		log.Info("stage", "name", st.Name, "req/s", int(st.RPS), "success", st.Success, "p99", st.P99, "codes", st.Codes, "errors", st.Errors)
		res.Stages = append(res.Stages, st)
	}
	// If the create stage ran into the limit (users answers 503 when the
	// tenant says 429), wait for a fresh window and stay inside it, so the
	// latency stage measures the pipeline, not the limiter.
	// Billing consumes order.created events with a few workers; the create stage
	// leaves it a backlog. The invoice of the stage's last order (events are
	// consumed in stream order) shows when it is through: that gives billing's
	// sustained invoice rate, and the latency stage below starts on an idle
	// pipeline instead of measuring the queue.
	if cs := res.Stages[len(res.Stages)-1]; len(cs.lastBody) > 0 {
		var last struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(cs.lastBody, &last) == nil && last.ID != "" {
			c := &http.Client{Timeout: 10 * time.Second}
			if _, ok := waitInvoice(ctx, c, billing, auth, last.ID, time.Now().Add(drainTimeout)); ok {
				res.Drain = time.Since(createStart)
				n := cs.Codes["201"]
				res.InvoiceRate = float64(n) / res.Drain.Seconds()
				log.Info("billing drained the create stage", "orders", n, "took", res.Drain.Round(time.Millisecond), "invoices/s", int(res.InvoiceRate))
			} else {
				log.Warn("billing did not drain the create stage's backlog", "within", drainTimeout)
				res.DrainTimedOut = true
			}
		}
	}
	perClient := invoicePerClient
	if wait := time.Until(windowStart.Add(61 * time.Second)); wait > 0 && failed(res.Stages) {
		log.Info("waiting for devtenant's Management API rate-limit window to reset", "wait", wait.Round(time.Second))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		perClient = invoicePerClientLimited
	}
	res.Invoice = orderToInvoice(ctx, orders, billing, auth, body, o.clients, perClient, o.stageDur+o.stageDur/2)
	res.RSSLoad = sampler.stop()
	// The services have no pprof endpoint, so a CPU profile of orders and
	// billing comes from perf (which reads Go's frame pointers), while their
	// binaries still exist to symbolize it. perf takes CPU from the services
	// it samples, so it records a second, shorter pass of the same stage,
	// whose figures are not reported, rather than the measured one.
	if o.perf {
		prof, err := startPerf(dir, pids["orders"], pids["billing"])
		if err != nil {
			log.Warn("perf", "err", err)
		} else {
			profilePerClient := invoicePerClientProfile
			if perClient == invoicePerClientLimited {
				profilePerClient = 1
			}
			_ = orderToInvoice(ctx, orders, billing, auth, body, o.clients, profilePerClient, o.stageDur)
			res.Profile = prof.stop(ctx)
		}
	}
	log.Info("order → invoice", "orders", res.Invoice.Orders, "missing", res.Invoice.Missing, "failures", res.Invoice.Failures,
		"p99", pct(res.Invoice.Invoice, 99))
	return res, nil
}

// attack drives t with clients workers as fast as they go for d.
func attack(ctx context.Context, t vegeta.Target, clients int, d time.Duration) stage {
	a := vegeta.NewAttacker(vegeta.Workers(uint64(clients)), vegeta.MaxWorkers(uint64(clients)),
		vegeta.Connections(clients), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
	var m vegeta.Metrics
	var lat []time.Duration
	var okAt []time.Time
	var firstFail, lastOK time.Time
	var lastBody []byte
	start := time.Now()
	results := a.Attack(vegeta.NewStaticTargeter(t), vegeta.ConstantPacer{Freq: 0}, d, "")
	for {
		select {
		case r, ok := <-results:
			if !ok {
				m.Close()
				slicesSort(lat)
				st := stage{lastBody: lastBody, RPS: m.Throughput, Success: m.Success, Requests: m.Requests, Codes: m.StatusCodes, Errors: m.Errors,
					P50: m.Latencies.P50, P95: m.Latencies.P95, P99: m.Latencies.P99, Max: m.Latencies.Max, Lat: lat}
				if !firstFail.IsZero() {
					n := 0
					for _, at := range okAt {
						if at.Before(firstFail) {
							n++
						}
					}
					st.FirstFail = firstFail.Sub(start)
					if st.FirstFail > 0 {
						st.RPSBeforeFail = float64(n) / st.FirstFail.Seconds()
					}
				}
				return st
			}
			m.Add(r)
			lat = append(lat, r.Latency)
			done := r.Timestamp.Add(r.Latency)
			if r.Code >= 200 && r.Code < 300 && r.Error == "" {
				okAt = append(okAt, done)
				if done.After(lastOK) {
					lastOK, lastBody = done, r.Body
				}
			} else if firstFail.IsZero() || done.Before(firstFail) {
				firstFail = done
			}
		case <-ctx.Done():
			a.Stop()
		}
	}
}

// failed reports whether any stage saw a failed request.
func failed(st []stage) bool {
	for _, s := range st {
		if s.Success < 1 {
			return true
		}
	}
	return false
}

func createOrder(ctx context.Context, c *http.Client, base string, h http.Header, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/orders", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header = h.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var o struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return "", fmt.Errorf("POST /v1/orders: status %d %s", resp.StatusCode, e.Error)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&o); err != nil || o.ID == "" {
		return "", fmt.Errorf("POST /v1/orders: no order id (%v)", err)
	}
	return o.ID, nil
}

// orderToInvoice runs clients loops of "create an order, then wait until
// billing lists its invoice" for d. Billing has no public push interface;
// polling its API every few milliseconds would load billing with many times
// more requests than the orders being measured. Instead a KV watch on billing's
// bucket (as billing's dev NATS user) says when the invoice is stored, and
// only then one GET /v1/invoices?order_id= checks that billing lists it
// (retried every pollInterval if not yet): the interval ends when that GET
// answers with the invoice.
func orderToInvoice(ctx context.Context, orders, billing string, h http.Header, body []byte, clients, perClient int, d time.Duration) *invoiceLatency {
	res := &invoiceLatency{Clients: clients, PerClient: perClient, Poll: pollInterval, Failures: map[string]int{}}
	w, err := watchInvoices(ctx)
	if err != nil {
		res.Failures["watching billing's invoices: "+err.Error()]++
		return res
	}
	defer w.stop()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * clients, MaxIdleConns: 4 * clients}}
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for n := 0; n < perClient && time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				t0 := time.Now()
				id, err := createOrder(ctx, c, orders, h, body)
				if err != nil {
					mu.Lock()
					res.Missing++
					res.Failures[err.Error()]++
					mu.Unlock()
					if ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond) // no hot loop on a failing endpoint
					}
					continue
				}
				t1 := time.Now()
				until := t1.Add(5 * time.Second)
				stored := w.wait(ctx, id, until)
				polls, ok := 0, false
				if stored {
					polls, ok = waitInvoice(ctx, c, billing, h, id, until)
				}
				t2 := time.Now()
				mu.Lock()
				res.Orders++
				res.ExtraPolls += max(polls-1, 0)
				switch {
				case ok:
					res.Create = append(res.Create, t1.Sub(t0))
					res.Invoice = append(res.Invoice, t2.Sub(t1))
					res.E2E = append(res.E2E, t2.Sub(t0))
				case stored:
					res.Missing++
					res.Failures["invoice stored but not listed within 5 s"]++
				default:
					res.Missing++
					res.Failures["no invoice stored within 5 s"]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slicesSort(res.Create)
	slicesSort(res.Invoice)
	slicesSort(res.E2E)
	return res
}

// billingNATSPassword is billing's NATS password in the dev configuration:
// deploy/nats/passwords.conf, which deploy/nats/accounts.conf (generated from
// pkg/platform/mesh, loaded by devstack's embedded server through nats.conf)
// includes.
const billingNATSPassword = "billing-nats-dev-secret"

// invoiceWatch records when each order's invoice first appears in billing's
// bucket (key = order id). It connects as billing, inside the BILLING account
// where the bucket lives: billing's allow list in deploy/nats/accounts.conf
// lets it create the ordered consumer a KV watch uses on KV_billing_invoices.
type invoiceWatch struct {
	nc   *nats.Conn
	kw   jetstream.KeyWatcher
	mu   sync.Mutex
	seen map[string]chan struct{} // closed once the order's invoice is stored
}

func watchInvoices(ctx context.Context) (*invoiceWatch, error) {
	nc, err := nats.Connect(devstack.NATSURL, nats.UserInfo("billing", billingNATSPassword), nats.Name("bench"),
		nats.CustomInboxPrefix("_INBOX_billing")) // billing may subscribe to its own inboxes only (deploy/nats/accounts.conf)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kv, err := js.KeyValue(ctx, "billing_invoices")
	if err != nil {
		nc.Close()
		return nil, err
	}
	kw, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		nc.Close()
		return nil, err
	}
	w := &invoiceWatch{nc: nc, kw: kw, seen: map[string]chan struct{}{}}
	go func() {
		for e := range kw.Updates() {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				w.stored(e.Key())
			}
		}
	}()
	return w, nil
}

// channel returns the channel closed once the order's invoice is stored.
func (w *invoiceWatch) channel(id string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.channelLocked(id)
}

// stored marks the order's invoice as stored; later updates of it are no-ops.
func (w *invoiceWatch) stored(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.channelLocked(id)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (w *invoiceWatch) channelLocked(id string) chan struct{} {
	ch, ok := w.seen[id]
	if !ok {
		ch = make(chan struct{})
		w.seen[id] = ch
	}
	return ch
}

// wait reports whether the order's invoice was stored before until.
func (w *invoiceWatch) wait(ctx context.Context, id string, until time.Time) bool {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-w.channel(id):
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (w *invoiceWatch) stop() {
	_ = w.kw.Stop()
	w.nc.Close()
}

// waitInvoice asks billing for the order's invoice until it is listed or
// until passes, every pollInterval; it returns the number of requests made.
func waitInvoice(ctx context.Context, c *http.Client, billing string, h http.Header, id string, until time.Time) (int, bool) {
	n := 0
	for time.Now().Before(until) && ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, billing+"/v1/invoices?order_id="+id, nil)
		if err != nil {
			return n, false
		}
		req.Header.Set("Authorization", h.Get("Authorization"))
		n++
		resp, err := c.Do(req)
		if err == nil {
			var list []json.RawMessage
			derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && derr == nil && len(list) > 0 {
				return n, true
			}
		}
		time.Sleep(pollInterval)
	}
	return n, false
}

// coldStartWatcher records, per service, the time from its process start
// (from /proc/<pid>/stat, in clock ticks since boot) to its first 200 from
// /readyz, both on the /proc/uptime clock.
type coldStartWatcher struct {
	bin string
	mu  sync.Mutex
	got map[string]time.Duration
}

func newColdStartWatcher(bin string) *coldStartWatcher {
	return &coldStartWatcher{bin: bin, got: map[string]time.Duration{}}
}

func (w *coldStartWatcher) watch(ctx context.Context) {
	c := &http.Client{Timeout: time.Second}
	for ctx.Err() == nil {
		pids := findPIDs(w.bin)
		w.mu.Lock()
		n := len(w.got)
		w.mu.Unlock()
		if n == len(devstack.Services) {
			return
		}
		for _, s := range devstack.Services {
			pid, ok := pids[s.Name]
			w.mu.Lock()
			_, done := w.got[s.Name]
			w.mu.Unlock()
			if !ok || done {
				continue
			}
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.Port))
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				continue
			}
			up, err1 := uptime()
			st, err2 := procStart(pid)
			if err1 == nil && err2 == nil {
				w.mu.Lock()
				w.got[s.Name] = up - st
				w.mu.Unlock()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *coldStartWatcher) result() map[string]time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range w.got {
		out[k] = v
	}
	return out
}

// findPIDs maps service name → pid for processes whose executable is
// bin/<name> (the binaries devstack built into our data directory), so no
// other process on the machine is ever confused with ours.
func findPIDs(bin string) map[string]int {
	want := map[string]string{}
	for _, s := range devstack.Services {
		want[filepath.Join(bin, s.Name)] = s.Name
	}
	out := map[string]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if name, ok := want[exe]; ok {
			out[name] = pid
		}
	}
	return out
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

const clockTicks = 100 // USER_HZ on Linux

func procStart(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unparsable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("short /proc stat")
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // field 22 overall: starttime
	if err != nil {
		return 0, err
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

func uptime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty /proc/uptime")
	}
	s, err := strconv.ParseFloat(f[0], 64)
	return time.Duration(s * float64(time.Second)), err
}

type rssSampler struct {
	stopc chan struct{}
	done  chan map[string]int64
}

// startRSSSampler records each process's peak VmRSS every 100 ms.
func startRSSSampler(ctx context.Context, pids map[string]int) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan map[string]int64, 1)}
	go func() {
		peak := map[string]int64{}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for name, pid := range pids {
				peak[name] = max(peak[name], rssKiB(pid))
			}
			select {
			case <-s.stopc:
				s.done <- peak
				return
			case <-ctx.Done():
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() map[string]int64 {
	close(s.stopc)
	return <-s.done
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

type perfRecorder struct {
	cmd  *exec.Cmd
	file string
}

func startPerf(dir string, pids ...int) (*perfRecorder, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, errors.New("perf is not installed (apt-get install linux-perf); no profile of the services")
	}
	var ps []string
	for _, p := range pids {
		ps = append(ps, strconv.Itoa(p))
	}
	file := filepath.Join(dir, "perf.data")
	cmd := exec.Command(perf, "record", "-q", "-F", "999", "-g", "--all-user", "-o", file, "-p", strings.Join(ps, ","))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &perfRecorder{cmd: cmd, file: file}, nil
}

// stop ends the recording and reports, per process, the cumulative share
// (self and callees) of the project's and its libraries' functions: that
// names the code path where the time goes, which a flat profile of runtime
// and syscall leaves does not.
func (p *perfRecorder) stop(ctx context.Context) string {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", p.file, "--stdio", "--children",
		"--sort", "comm,symbol", "-g", "none", "--percent-limit", "2").Output()
	if err != nil {
		return ""
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || !strings.Contains(l, "%") {
			continue
		}
		if strings.Contains(l, "github.com/") || strings.Contains(l, "encoding/json") || strings.Contains(l, "net/http.(*conn).serve") {
			keep = append(keep, strings.TrimRight(l, " -"))
		}
		if len(keep) == 45 {
			break
		}
	}
	return strings.Join(keep, "\n") + "\n"
}
