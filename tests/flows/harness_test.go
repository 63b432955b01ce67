// Package flows drives the three services together, as separate processes,
// through their public HTTP APIs (docs/contract.md §6): an in-process
// nats-server with the project's NATS users and permissions, an in-process
// devtenant, and the service binaries built once from the checkout.
package flows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
	"github.com/authmesh/authmesh/tests/apiclient"
	"github.com/authmesh/authmesh/tools/devstack"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// The tokens' issuer and audience (apiclient.Audience) stay the contract's,
// although devtenant is reached at an httptest URL: the expected issuer and
// the key URL are separate settings (contract §1).
const issuer = "http://localhost:8400/"

var serviceNames = []string{"tts", "users", "orders", "billing"}

// stack is the running system every test shares. Tests run one after the
// other: they share alice, and the block flow and the restarts affect
// everyone using her or the stopped service.
var stack *system

type system struct {
	root      string
	bin       string
	nats      *server.Server
	natsStore string // JetStream's store directory
	tenant    *tenant.Server
	tenantURL string
	// traces receives every span the services export (OTLP/HTTP): tracing
	// is on at 100 % in every run of the stack, as an operator would run it.
	traces   *oteltest.Receiver
	ttsJWKS  string // the Transaction Token Service's keys
	ttsKeys  string // its key file
	services map[string]*service

	// mgmtCalls counts requests to devtenant's Management API (/api/v2/),
	// whose rate limit the whole tenant shares.
	mgmtCalls atomic.Int64
}

func (s *system) countManagement(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v2/") {
			s.mgmtCalls.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

// service is one child process; its port is fixed for the run, so a
// restarted service is found where it was.
type service struct {
	name string
	addr string // 127.0.0.1:port
	log  *authztest.LogBuffer
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func (s *service) url(path string) string { return "http://" + s.addr + path }

func TestMain(m *testing.M) {
	code, err := runMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flows:", err)
		if stack != nil {
			stack.dumpLogs(os.Stderr, nil)
		}
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func runMain(m *testing.M) (code int, err error) {
	root, err := devstack.FindRoot(".")
	if err != nil {
		return 1, err
	}
	tmp, err := os.MkdirTemp("", "authmesh-flows-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)

	s := &system{root: root, bin: filepath.Join(tmp, "bin"), services: map[string]*service{}}
	if err := devstack.BuildServices(context.Background(), "go", root, s.bin); err != nil {
		return 1, err
	}

	s.natsStore = filepath.Join(tmp, "nats")
	opts, err := devstack.NATSOptions(root, s.natsStore, "127.0.0.1", -1, 0, -1)
	if err != nil {
		return 1, err
	}
	natsLog := &authztest.LogBuffer{}
	s.nats, err = devstack.StartNATS(opts, natsLog)
	if err != nil {
		return 1, err
	}
	defer func() {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}()

	s.tenant, err = tenant.New(tenant.Config{
		Issuer:     issuer,
		TenantFile: filepath.Join(root, "deploy", "tenant.yaml"),
		DevDir:     filepath.Join(root, "deploy", "dev"),
		DataDir:    filepath.Join(tmp, "devtenant"),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return 1, err
	}
	defer s.tenant.Close()
	ts := httptest.NewServer(s.countManagement(s.tenant.Handler()))
	defer ts.Close()
	s.tenantURL = ts.URL + "/"

	s.traces = oteltest.Start()
	defer s.traces.Close()

	addrs := map[string]string{}
	for _, name := range serviceNames {
		if addrs[name], err = freeAddr(); err != nil {
			return 1, err
		}
	}
	s.ttsJWKS = "http://" + addrs["tts"] + "/.well-known/jwks.json"
	s.ttsKeys = filepath.Join(tmp, "tts", "keys.json")
	for _, name := range serviceNames {
		s.services[name] = &service{name: name, addr: addrs[name], log: &authztest.LogBuffer{}, env: s.env(name, addrs[name])}
	}
	stack = s
	defer func() {
		for _, name := range serviceNames {
			if err := s.stopService(name); err != nil && code == 0 {
				fmt.Fprintf(os.Stderr, "flows: stopping %s: %v\n", name, err)
				code = 1
			}
		}
	}()
	// All three at once: each one's readiness waits for the streams its peers own.
	for _, name := range serviceNames {
		if err := s.spawn(name); err != nil {
			return 1, err
		}
	}
	for _, name := range serviceNames {
		if err := s.waitReady(name, 60*time.Second); err != nil {
			return 1, err
		}
	}
	return m.Run(), nil
}

// env is a service's whole environment: nothing inherited beyond PATH and
// HOME, so a developer's AUTH0_DOMAIN or USERS_HTTP_ADDR cannot leak in.
func (s *system) env(name, addr string) []string {
	p := strings.ToUpper(name) + "_"
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"AUTH0_ISSUER=" + issuer,
		"AUTH0_AUDIENCE=" + apiclient.Audience,
		"AUTH0_JWKS_URL=" + s.tenantURL + ".well-known/jwks.json",
		"AUTH0_TOKEN_URL=" + s.tenantURL + "oauth/token",
		"AUTHMESH_TTS_JWKS_URL=" + s.ttsJWKS,
		"TTS_KEYS_FILE=" + s.ttsKeys,
		p + "HTTP_ADDR=" + addr,
		p + "NATS_URL=" + s.nats.ClientURL(),
		p + "NATS_REPLICAS=1",
		p + "CLIENT_ID=" + name + "-service",
		p + "CLIENT_SECRET=" + name + "-service-dev-secret",
		p + "LOG_LEVEL=" + envOr("FLOWS_LOG_LEVEL", "info"),
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + s.traces.Endpoint(),
		"OTEL_BSP_SCHEDULE_DELAY=100", // ms: spans reach the test quickly
	}
	if name == "users" {
		// The Management API's audience stays <issuer>api/v2/ (the default).
		env = append(env, "USERS_MGMT_URL="+s.tenantURL+"api/v2/")
	}
	return env
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startService runs the service's binary and waits until its /readyz answers 200.
func (s *system) startService(name string) error {
	if err := s.spawn(name); err != nil {
		return err
	}
	return s.waitReady(name, 30*time.Second)
}

// spawn starts the service's process.
func (s *system) spawn(name string) error {
	svc := s.services[name]
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.cmd != nil {
		return fmt.Errorf("%s is already running", name)
	}
	fmt.Fprintf(svc.log, "----- flows: starting %s at %s -----\n", name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(filepath.Join(s.bin, name))
	cmd.Dir = s.root
	cmd.Env = svc.env
	cmd.Stdout, cmd.Stderr = svc.log, svc.log
	// A crashed test binary must not leave services holding ports and NATS consumers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	svc.cmd, svc.done = cmd, done
	return nil
}

// waitReady polls the service's /readyz until it answers 200.
func (s *system) waitReady(name string, timeout time.Duration) error {
	svc := s.services[name]
	svc.mu.Lock()
	cmd, done := svc.cmd, svc.done
	svc.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is not running", name)
	}
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-done:
			svc.mu.Lock()
			svc.cmd = nil
			svc.mu.Unlock()
			return fmt.Errorf("%s exited during start-up: %v", name, cmd.ProcessState)
		default:
		}
		resp, err := client.Get(svc.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %v (last: %v)", name, timeout, statusOrErr(resp, err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func statusOrErr(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// stopService sends SIGTERM (a graceful shutdown that drains NATS) and kills
// the process if it has not exited within 10 s; that counts as an error,
// since the services promise a graceful stop.
func (s *system) stopService(name string) error {
	svc := s.services[name]
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.cmd == nil {
		return nil
	}
	defer func() { svc.cmd = nil }()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM %s: %w", name, err)
	}
	select {
	case <-svc.done:
		fmt.Fprintf(svc.log, "----- flows: %s stopped: %v -----\n", name, svc.cmd.ProcessState)
		if !svc.cmd.ProcessState.Success() {
			return fmt.Errorf("%s exited with %v after SIGTERM", name, svc.cmd.ProcessState)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = svc.cmd.Process.Kill()
		<-svc.done
		return fmt.Errorf("%s did not stop within 10s of SIGTERM; killed", name)
	}
}

// stop and start stop and restart one service in the middle of a test.
func stop(t *testing.T, name string) {
	t.Helper()
	if err := stack.stopService(name); err != nil {
		t.Errorf("stop %s: %v", name, err)
	}
}

func start(t *testing.T, name string) {
	t.Helper()
	if err := stack.startService(name); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
}

// ensureRunning starts every service that is not running.
func ensureRunning(t *testing.T) {
	t.Helper()
	for _, name := range serviceNames {
		svc := stack.services[name]
		svc.mu.Lock()
		running := svc.cmd != nil
		svc.mu.Unlock()
		if !running {
			start(t, name)
		}
	}
}

// setup marks where the services' logs stand, makes sure every service runs
// (a previous test may have failed with one stopped), and prints the logs
// written during the test if it fails.
func setup(t *testing.T) {
	t.Helper()
	ensureRunning(t)
	marks := map[string]int{}
	for _, name := range serviceNames {
		marks[name] = stack.services[name].log.Len()
	}
	t.Cleanup(func() {
		if t.Failed() {
			var b bytes.Buffer
			stack.dumpLogs(&b, marks)
			t.Logf("service logs during %s:\n%s", t.Name(), b.String())
		}
	})
}

// dumpLogs writes each service's log from its mark (everything if marks is nil).
func (s *system) dumpLogs(w io.Writer, marks map[string]int) {
	const limit = 64 << 10
	for _, name := range serviceNames {
		svc, ok := s.services[name]
		if !ok {
			continue
		}
		out := svc.log.From(marks[name])
		if len(out) > limit {
			out = append([]byte(fmt.Sprintf("[... %d bytes left out ...]\n", len(out)-limit)), out[len(out)-limit:]...)
		}
		fmt.Fprintf(w, "===== %s =====\n%s", name, out)
	}
}

// ctx is a bounded context for one test step.
func stepCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
