package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/tools/trace"
)

// startStack runs the stack through Run, as `make run` does, and returns once
// it is ready; stop cancels it and asserts a clean stop within 5 s.
func startStack(t *testing.T, root, data string, out *authztest.LogBuffer) (r Ready, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Root: root, DataDir: data, Out: out, NoBanner: true, OnReady: func(r Ready) { ready <- r }})
	}()
	select {
	case r = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v\n--- output ---\n%s", err, out)
	case <-time.After(4 * time.Minute):
		cancel()
		<-done
		t.Fatalf("stack not ready within 4 minutes\n--- output ---\n%s", out)
	}
	return r, func() {
		t.Helper()
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("stopping took %v, want under 5s", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Run did not return within 10s of cancel\n--- output ---\n%s", out)
		}
	}
}

func call(t *testing.T, method, url, token, body string, want int, into any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, b)
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, b, err)
		}
	}
}

// TestRunStack starts the `make run` stack twice on one data directory:
// the first run creates an order whose invoice must appear in billing within
// 2 s; the second run must still find that order.
func TestRunStack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the whole stack; skipped with -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Services {
		if _, err := os.Stat(filepath.Join(root, "services", s.Name, "cmd", s.Name)); err != nil {
			t.Skipf("services/%s/cmd/%s does not exist yet: nothing to run", s.Name, s.Name)
		}
	}
	if busy := PortsBusy(); len(busy) > 0 {
		if os.Getenv("REQUIRE_DOCKER") == "1" {
			// CI: every test must run there.
			t.Fatalf("the contract ports %v are in use: cannot start the stack", busy)
		}
		t.Skipf("the contract ports %v are in use (a `make run` or `make up` is running?): cannot start a second stack", busy)
	}
	data := t.TempDir()
	out := &authztest.LogBuffer{}
	defer func() {
		if t.Failed() {
			t.Logf("--- stack output ---\n%s", out)
		}
	}()

	r, stop := startStack(t, root, data, out)
	if !strings.HasPrefix(r.AliceToken, "ey") {
		t.Fatalf("alice's token does not look like a JWT")
	}
	for _, s := range Services {
		call(t, http.MethodGet, s.URL()+"/readyz", "", "", http.StatusOK, nil)
	}
	assertLoopbackOnly(t, Ports())
	assertNATSThroughCallout(t, r.AliceToken)
	var order struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	call(t, http.MethodPost, "http://localhost:8402/v1/orders", r.AliceToken, `{"items":[{"sku":"mug","quantity":2}]}`, http.StatusCreated, &order)
	if order.ID == "" || order.Status != "pending" {
		t.Fatalf("created order = %+v, want an id and status pending", order)
	}
	var invoices []struct {
		OrderID     string `json:"order_id"`
		Status      string `json:"status"`
		AmountCents int    `json:"amount_cents"`
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		invoices = nil
		call(t, http.MethodGet, "http://localhost:8403/v1/invoices?order_id="+order.ID, r.AliceToken, "", http.StatusOK, &invoices)
		if len(invoices) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(invoices) != 1 || invoices[0].Status != "open" || invoices[0].AmountCents != 2400 || invoices[0].OrderID != order.ID {
		t.Fatalf("invoices for order %s after 2s = %+v, want one open invoice of 2400", order.ID, invoices)
	}
	stop()
	if t.Failed() {
		return
	}

	r, stop = startStack(t, root, data, out)
	var again struct {
		ID string `json:"id"`
	}
	call(t, http.MethodGet, fmt.Sprintf("http://localhost:8402/v1/orders/%s", order.ID), r.AliceToken, "", http.StatusOK, &again)
	if again.ID != order.ID {
		t.Fatalf("second run: order %s came back as %q", order.ID, again.ID)
	}
	stop()
	if t.Failed() {
		return
	}
	runCommand(t, root, data, order.ID)
}

// runCommand is the third run, through the real command as `make run
// TRACING=1` starts it: the banner's curl line places an order when pasted
// into a shell, the first run's order is still there, that order is one trace
// in Jaeger with spans of users, orders and billing, Jaeger listens on
// loopback only, and Ctrl-C (SIGINT) stops everything, Jaeger included,
// within 5 s with exit status 0.
func runCommand(t *testing.T, root, data, orderID string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "devstack")
	if b, err := exec.Command("go", "build", "-o", bin, "./cmd/devstack").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/devstack: %v\n%s", err, b)
	}
	out := &authztest.LogBuffer{}
	cmd := exec.Command(bin, "-root", root, "-data", data, "-tracing")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- devstack output ---\n%s", out)
		}
	}()
	var curl string
	for deadline := time.Now().Add(4 * time.Minute); curl == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if !strings.Contains(out.String(), "Ctrl-C stops everything") {
			continue
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "curl ") && strings.Contains(l, "/v1/orders") {
				curl = l
			}
		}
	}
	if curl == "" {
		t.Fatal("no banner with a curl line within 4 minutes")
	}
	if _, err := exec.LookPath("curl"); err == nil {
		b, err := exec.Command("bash", "-c", curl+` -o /dev/null -w '%{http_code}'`).Output()
		if err != nil || string(b) != "201" {
			t.Fatalf("the banner's curl line, pasted: %v, status %q, want 201\n%s", err, b, curl)
		}
	} else {
		t.Log("curl is not installed: the banner's line was not run")
	}
	tok, _, _ := strings.Cut(curl[strings.Index(curl, "Bearer ")+len("Bearer "):], "'")
	call(t, http.MethodGet, "http://localhost:8402/v1/orders/"+orderID, tok, "", http.StatusOK, nil)
	assertOrderTraced(t, out.String())

	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("devstack after Ctrl-C: %v, want exit status 0", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Ctrl-C took %v to stop everything, want under 5s", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("devstack still running 15 s after Ctrl-C")
	}
	if busy := PortsBusy(); len(busy) > 0 {
		t.Errorf("after Ctrl-C the ports %v are still in use", busy)
	}
}

// assertLoopbackOnly dials every port of the running stack on this
// machine's non-loopback addresses: nothing may answer there (the stack
// binds to 127.0.0.1 unless AUTHMESH_DEV_BIND opens it).
func assertLoopbackOnly(t *testing.T, ports []int) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var outside []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			outside = append(outside, n.IP)
		}
	}
	if len(outside) == 0 {
		t.Log("no non-loopback address on this machine: the loopback-only check has nothing to dial")
		return
	}
	for _, ip := range outside {
		for _, p := range ports {
			addr := net.JoinHostPort(ip.String(), strconv.Itoa(p))
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("the stack answers on %s: it must listen on 127.0.0.1 only", addr)
			}
		}
	}
}

// assertNATSThroughCallout: the TTS answers the stack's auth callout. A
// person's token opens a WebSocket connection (live updates), not a
// standard one; no token opens nothing.
func assertNATSThroughCallout(t *testing.T, token string) {
	t.Helper()
	ws, err := nats.Connect(fmt.Sprintf("ws://localhost:%d", NATSWSPort), nats.Token(token), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("alice over WebSocket: %v", err)
	}
	ws.Close()
	for name, opt := range map[string]nats.Option{"alice's token": nats.Token(token), "no token": func(*nats.Options) error { return nil }} {
		if nc, err := nats.Connect(NATSURL, opt, nats.Timeout(5*time.Second)); err == nil {
			nc.Close()
			t.Errorf("standard NATS connection with %s: connected, want refused", name)
		}
	}
}

// assertOrderTraced: with tracing, the banner names Jaeger, the latest order
// (the banner's curl line) is one trace there with spans of users, orders
// and billing, and Jaeger answers on loopback only.
func assertOrderTraced(t *testing.T, banner string) {
	t.Helper()
	if !strings.Contains(banner, "jaeger     "+JaegerURL) {
		t.Errorf("the banner does not name Jaeger's query API %s", JaegerURL)
	}
	jaeger := &trace.Client{URL: JaegerURL}
	var got []string
	deadline := time.Now().Add(20 * time.Second) // the services' span batches go out every few seconds
	for {
		tr, err := jaeger.Latest(context.Background(), trace.OrdersService, trace.CreateOrderSpan, time.Hour)
		if err == nil {
			got = tr.Services()
			if slices.Contains(got, "users") && slices.Contains(got, "orders") && slices.Contains(got, "billing") {
				break
			}
		} else {
			got = []string{err.Error()}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the order's trace in Jaeger: services %q, want users, orders and billing", got)
		}
		time.Sleep(250 * time.Millisecond)
	}
	assertLoopbackOnly(t, JaegerPorts())
}
