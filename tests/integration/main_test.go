// Package integration runs the whole system in containers (a three-node NATS
// JetStream cluster, devtenant and the three services on a private network)
// and drives it only through its public interfaces: HTTP on the mapped ports
// and the NATS monitoring endpoint. See README.md.
package integration

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// The stack every scenario shares; nil when no Docker engine runs.
var stack *system

// skipReason says why there is no stack, for t.Skip.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// Ryuk needs a registry to pull its image, and this machine has /.dockerenv, which makes
	// testcontainers dial the default gateway instead of the published ports.
	setDefaultEnv("TESTCONTAINERS_RYUK_DISABLED", "true")
	setDefaultEnv("TESTCONTAINERS_HOST_OVERRIDE", "localhost")

	if err := dockerHealthy(); err != nil {
		if os.Getenv("REQUIRE_DOCKER") == "1" {
			fmt.Fprintf(os.Stderr, "FAIL: REQUIRE_DOCKER=1 but no Docker engine answers: %v\n", err)
			return 1
		}
		skipReason = fmt.Sprintf("SKIPPING the integration suite: no Docker engine answers (%v); set REQUIRE_DOCKER=1 to make this a failure", err)
		fmt.Fprintln(os.Stderr, skipReason)
		return m.Run()
	}
	if testing.Short() {
		skipReason = "SKIPPING the integration suite in -short mode"
		fmt.Fprintln(os.Stderr, skipReason)
		return m.Run()
	}

	s, err := newSystem()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: integration stack: %v\n", err)
		return 1
	}
	defer s.close()
	// Jaeger's binary is cached in the checkout (bin/jaeger); a first build
	// takes minutes, outside the stack's own deadline.
	started := time.Now()
	if s.jaegerBin, err = buildJaeger(s.root); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	logf("jaeger binary ready in %v", time.Since(started).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	started = time.Now()
	if err := s.build(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: building binaries and images: %v\n", err)
		return 1
	}
	logf("binaries and images built in %v", time.Since(started).Round(time.Millisecond))
	started = time.Now()
	if err := s.up(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the stack: %v\n", err)
		s.dumpLogs(os.Stderr)
		return 1
	}
	logf("stack ready in %v", time.Since(started).Round(time.Millisecond))
	stack = s
	// Ready services still settle (stream and consumer leaders, first
	// connections) before the first flow meets contract §6's 2 s; wait for
	// one complete order → invoice → paid round and say how long it took.
	started = time.Now()
	if err := warmUp(30 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: first order → invoice → paid round: %v\n", err)
		s.dumpLogs(os.Stderr)
		return 1
	}
	logf("first order → invoice → paid round took %v", time.Since(started).Round(time.Millisecond))

	code := m.Run()
	if code != 0 {
		s.dumpLogs(os.Stderr)
	}
	return code
}

func setDefaultEnv(k, v string) {
	if os.Getenv(k) == "" {
		os.Setenv(k, v)
	}
}

func dockerHealthy() (err error) {
	defer func() {
		// The provider panics on some broken Docker configurations.
		if r := recover(); r != nil {
			err = fmt.Errorf("docker provider: %v", r)
		}
	}()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Health(ctx)
}

// requireStack skips the test, loudly, when the suite runs without Docker.
func requireStack(t *testing.T) *system {
	t.Helper()
	if stack == nil {
		t.Skip(skipReason)
	}
	return stack
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[integration %s] %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// warmUp places one order as alice, pays its invoice and waits for the order
// to be paid, within d.
func warmUp(d time.Duration) error {
	deadline := time.Now().Add(d)
	r, err := api.TokenRequest(url.Values{
		"grant_type": {"password"}, "username": {apiclient.Alice}, "password": {apiclient.Password},
		"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "scope": {"openid"},
	})
	if err != nil || r.Status != http.StatusOK {
		return fmt.Errorf("token: %v %d %s", err, r.Status, r.Error)
	}
	tok := r.AccessToken
	resp, err := api.TryCall(http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1))
	if err != nil || resp.Status != http.StatusCreated {
		return fmt.Errorf("POST /v1/orders: %v %v", resp, err)
	}
	id := jsonField(resp.Body, "id")
	step := func(what string, done func() bool) error {
		for !done() {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not within %v", what, d)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	var inv []apiclient.Invoice
	if err := step("invoice", func() bool { inv, err = api.TryInvoicesOf(tok, id); return err == nil && len(inv) == 1 }); err != nil {
		return err
	}
	if resp, err := api.TryCall(http.MethodPost, "billing", "/v1/invoices/"+inv[0].ID+"/pay", tok, nil); err != nil || resp.Status != http.StatusOK {
		return fmt.Errorf("pay: %v %v", resp, err)
	}
	return step("order paid", func() bool {
		resp, err := api.TryCall(http.MethodGet, "orders", "/v1/orders/"+id, tok, nil)
		return err == nil && jsonField(resp.Body, "status") == "paid"
	})
}
