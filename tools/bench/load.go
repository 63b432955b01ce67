package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

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

// runLoad runs the load stages against orders (a health check, an
// authenticated read, order creation), each for o.stageDur with o.clients
// workers, then waits for billing to drain the create stage's backlog. It
// returns how many orders each client may place in the latency stage that
// follows, inside devtenant's Management API rate limit.
func runLoad(ctx context.Context, o options, log *slog.Logger, res *stackResult, orders, billing string, auth http.Header, body []byte) (perClient int, err error) {
	// Each order costs the users service two Management API calls to
	// devtenant, which (like Auth0) allows 1000 per minute per client in a
	// fixed window; the window opens at the first call, about now.
	windowStart := time.Now()
	id, err := createOrder(ctx, http.DefaultClient, orders, auth, body)
	if err != nil {
		return 0, fmt.Errorf("creating a first order: %w", err)
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
	drain(ctx, log, res, billing, auth, createStart)
	// If the create stage ran into the limit (users answers 503 when the
	// tenant says 429), wait for a fresh window and stay inside it, so the
	// latency stage measures the pipeline, not the limiter.
	perClient = invoicePerClient
	if wait := time.Until(windowStart.Add(61 * time.Second)); wait > 0 && failed(res.Stages) {
		log.Info("waiting for devtenant's Management API rate-limit window to reset", "wait", wait.Round(time.Second))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		perClient = invoicePerClientLimited
	}
	return perClient, nil
}

// drain waits for billing to list the invoice of the create stage's last
// order and records how long that took from the stage's start.
func drain(ctx context.Context, log *slog.Logger, res *stackResult, billing string, auth http.Header, createStart time.Time) {
	// Billing consumes order.created events with a few workers; the create stage
	// leaves it a backlog. The invoice of the stage's last order (events are
	// consumed in stream order) shows when it is through: that gives billing's
	// sustained invoice rate, and the latency stage that follows starts on an idle
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
