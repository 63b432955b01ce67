// Package devstack runs the whole local system on one machine without Docker:
// an embedded nats-server with JetStream, devtenant in-process, the three
// services as child processes, and the SPA's static files. It is what
// `make run` starts (cmd/devstack calls Run).
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// The contract's addresses (docs/contract.md §1). They are fixed because the
// issuer string, CORS origins and the tests outside the repository rely on them.
const (
	Issuer      = "http://localhost:8400/"
	Audience    = "https://api.authmesh.dev"
	TenantAddr  = ":8400"
	WebAddr     = ":8404"
	NATSPort    = 4222
	NATSMonPort = 8222
	NATSWSPort  = 8405 // people's live updates (the SPA), through the auth callout
	NATSURL     = "nats://localhost:4222"
)

// BindEnv names the variable that opens the stack beyond this machine:
// AUTHMESH_DEV_BIND=0.0.0.0 binds every listener to every interface. Unset,
// everything listens on 127.0.0.1 only: the stack runs with published dev
// secrets (anyone who reaches devtenant gets a tenant-admin token).
const BindEnv = "AUTHMESH_DEV_BIND"

// DefaultBindHost is where every listener of the stack binds unless BindEnv
// says otherwise.
const DefaultBindHost = "127.0.0.1"

// BindHost returns the host the stack's listeners bind to: the IP address in
// the BindEnv variable read through getenv, else DefaultBindHost.
func BindHost(getenv func(string) string) (string, error) {
	v := strings.TrimSpace(getenv(BindEnv))
	if v == "" {
		return DefaultBindHost, nil
	}
	if net.ParseIP(v) == nil {
		return "", fmt.Errorf("devstack: %s=%q: want an IP address to bind to, e.g. 0.0.0.0", BindEnv, v)
	}
	return v, nil
}

// Service is one of the services (the Transaction Token Service included) and
// its contract port.
type Service struct {
	Name string
	Port int
}

// Services are started in this order, the TTS first: the others' NATS
// connections go through the auth callout, which it answers. Each one
// retries until its peers (and the callout) answer, so the order only
// shortens the start-up.
var Services = []Service{{"tts", 8406}, {"users", 8401}, {"orders", 8402}, {"billing", 8403}}

// URL is the service's base URL on this machine.
func (s Service) URL() string { return fmt.Sprintf("http://localhost:%d", s.Port) }

// Ports lists every TCP port the stack listens on.
func Ports() []int {
	p := []int{8400, NATSPort, NATSMonPort, 8404, NATSWSPort}
	for _, s := range Services {
		p = append(p, s.Port)
	}
	return p
}

// Config configures Run. Only Root is required.
type Config struct {
	Root string // repository root (holds go.work, deploy/, services/)
	// BindHost is the IP address every listener binds to: devtenant, the
	// services, the SPA and NATS (clients, monitoring, WebSocket). Default
	// DefaultBindHost; see BindHost and BindEnv.
	BindHost string
	DataDir  string // state kept between runs; default <Root>/.data
	// TenantFile is the Deploy CLI tenant.yaml devtenant serves and the
	// services check their routes' permissions against; default
	// <Root>/deploy/tenant.yaml. Tests run variants of it (an API that
	// requires DPoP, say).
	TenantFile string
	Out        io.Writer // children's prefixed logs and the banner; default os.Stdout
	Logger     *slog.Logger

	// GoCmd builds the service binaries; default "go".
	GoCmd string
	// ReadyTimeout bounds the wait for every /readyz; default 2 minutes
	// (the first build of the services dominates it).
	ReadyTimeout time.Duration
	// StopTimeout is how long a child has after SIGTERM before it is killed; default 4s.
	StopTimeout time.Duration
	// OnReady, if set, is called once everything is ready, with what the banner shows.
	OnReady func(Ready)
	// NoBanner suppresses the banner (tests print their own diagnostics).
	NoBanner bool
	// Tracing runs Jaeger beside the stack (jaeger.go) and has the services
	// export their spans to it (OTEL_EXPORTER_OTLP_ENDPOINT).
	Tracing bool
	// OTLPEndpoint, without Tracing, is where the services export their
	// spans instead (an OTLP/HTTP receiver of the caller's, e.g. the
	// benchmark's); empty, they trace nothing.
	OTLPEndpoint string
}

// Ready describes the running stack.
type Ready struct {
	// AliceToken is a fresh access token for alice@authmesh.dev, or empty
	// when the tenant requires a DPoP proof of the CLI client: a token bound
	// to a key nobody else holds would be of no use.
	AliceToken string
	WebServed  bool   // whether web/ exists and is served on :8404
	JaegerURL  string // Jaeger's query API with Config.Tracing, else empty
}

func (c *Config) defaults() error {
	if c.Root == "" {
		return errors.New("devstack: Root is required")
	}
	root, err := filepath.Abs(c.Root)
	if err != nil {
		return fmt.Errorf("devstack: root: %w", err)
	}
	c.Root = root
	if _, err := os.Stat(filepath.Join(root, "deploy", "nats", "nats.conf")); err != nil {
		return fmt.Errorf("devstack: %s is not the authmesh repository root (no deploy/nats/nats.conf)", root)
	}
	if c.DataDir == "" {
		c.DataDir = filepath.Join(root, ".data")
	}
	if c.TenantFile == "" {
		c.TenantFile = filepath.Join(root, "deploy", "tenant.yaml")
	}
	if c.TenantFile, err = filepath.Abs(c.TenantFile); err != nil {
		return fmt.Errorf("devstack: tenant file: %w", err)
	}
	if _, err := os.Stat(c.TenantFile); err != nil {
		return fmt.Errorf("devstack: tenant file: %w", err)
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(prefixWriter(c.Out, "devstack"), nil))
	}
	if c.GoCmd == "" {
		c.GoCmd = "go"
	}
	if c.BindHost == "" {
		c.BindHost = DefaultBindHost
	}
	if net.ParseIP(c.BindHost) == nil {
		return fmt.Errorf("devstack: bind host %q is not an IP address", c.BindHost)
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Minute
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 4 * time.Second
	}
	if c.Tracing && c.OTLPEndpoint != "" {
		return errors.New("devstack: Tracing exports to its own Jaeger: set Tracing or OTLPEndpoint, not both")
	}
	return nil
}

// FindRoot walks up from dir to the directory holding go.work and deploy/nats.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "deploy", "nats")); err == nil {
				return d, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("devstack: no authmesh repository root (go.work with deploy/nats) above %s", dir)
		}
	}
}

// PortsBusy reports the stack's ports that something already listens on.
func PortsBusy() []int { return busyOf(Ports()) }

func busyOf(ports []int) []int {
	var busy []int
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			busy = append(busy, p)
			continue
		}
		l.Close()
	}
	return busy
}

// Run builds and starts the stack, waits until it is ready, and then runs
// until ctx is cancelled or a component fails. It stops everything before
// returning; a nil error means a clean stop after ctx was cancelled.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	busy := PortsBusy()
	if cfg.Tracing {
		busy = append(busy, busyOf(JaegerPorts())...)
	}
	if len(busy) > 0 {
		return fmt.Errorf("devstack: ports already in use: %v (another `make run` or `make up`?)", busy)
	}
	bin := filepath.Join(cfg.DataDir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	log.Info("building the services", "into", bin)
	if err := BuildServices(ctx, cfg.GoCmd, cfg.Root, bin); err != nil {
		return err
	}

	// Everything started below is stopped in reverse order by the deferred calls.
	if ip := net.ParseIP(cfg.BindHost); !ip.IsLoopback() {
		log.Warn("the stack listens beyond this machine, with published dev secrets", "bind", cfg.BindHost, "set_by", BindEnv)
	}
	opts, err := NATSOptions(cfg.Root, filepath.Join(cfg.DataDir, "nats"), cfg.BindHost, NATSPort, NATSMonPort, NATSWSPort)
	if err != nil {
		return err
	}
	ns, err := StartNATS(opts, prefixWriter(cfg.Out, "nats"))
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()

	tn, err := tenant.New(tenant.Config{
		Issuer:     Issuer,
		TenantFile: cfg.TenantFile,
		DevDir:     filepath.Join(cfg.Root, "deploy", "dev"),
		DataDir:    filepath.Join(cfg.DataDir, "devtenant"),
		Logger:     slog.New(slog.NewTextHandler(prefixWriter(cfg.Out, "devtenant"), nil)),
	})
	if err != nil {
		return err
	}
	defer tn.Close()

	failed := make(chan error, 8)
	var servers []*http.Server
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}()
	serve := func(name, addr string, h http.Handler) error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("devstack: %s: %w", name, err)
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("devstack: %s: %w", name, err)
			}
		}()
		return nil
	}
	if err := serve("devtenant", cfg.BindHost+TenantAddr, tn.Handler()); err != nil {
		return err
	}
	web := filepath.Join(cfg.Root, "web")
	webServed := false
	if fi, err := os.Stat(web); err == nil && fi.IsDir() {
		if err := serve("web", cfg.BindHost+WebAddr, http.FileServer(http.Dir(web))); err != nil {
			return err
		}
		webServed = true
	}

	otlp := cfg.OTLPEndpoint
	if cfg.Tracing {
		// Registered before the services' deferred stop, so it runs after it:
		// the services flush their last spans to a Jaeger still running.
		stopJaeger, err := startJaeger(ctx, cfg, failed)
		if err != nil {
			return err
		}
		defer stopJaeger()
		otlp = OTLPEndpoint
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	childCtx, stopChildren := context.WithCancel(context.Background())
	defer stopChildren()
	for _, svc := range Services {
		cmd := childCommand(childCtx, cfg, bin, svc, otlp)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("devstack: start %s: %w", svc.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			if childCtx.Err() == nil {
				failed <- fmt.Errorf("devstack: %s exited unexpectedly: %v", svc.Name, err)
			}
		}()
	}

	readyCtx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	err = waitReady(readyCtx, failed)
	cancel()
	if err != nil {
		return err
	}
	var token string
	if !tn.DPoPRequired(Audience, cliClient) {
		if token, err = passwordToken(ctx, "http://localhost"+TenantAddr+"/oauth/token", "alice@authmesh.dev", "dev-password"); err != nil {
			return err
		}
	}
	r := Ready{AliceToken: token, WebServed: webServed}
	if cfg.Tracing {
		r.JaegerURL = JaegerURL
	}
	if !cfg.NoBanner {
		printBanner(cfg.Out, r)
	}
	if cfg.OnReady != nil {
		cfg.OnReady(r)
	}

	select {
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	case err := <-failed:
		return err
	}
}

// waitReady polls devtenant's discovery document and every service's /readyz
// until all answer 200, a component fails, or ctx ends.
func waitReady(ctx context.Context, failed <-chan error) error {
	urls := []string{"http://localhost" + TenantAddr + "/.well-known/jwks.json"}
	for _, s := range Services {
		urls = append(urls, s.URL()+"/readyz")
	}
	client := &http.Client{Timeout: 2 * time.Second}
	pending := map[string]bool{}
	for _, u := range urls {
		pending[u] = true
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		for u := range pending {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					delete(pending, u)
				}
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case err := <-failed:
			return err
		case <-ctx.Done():
			var left []string
			for u := range pending {
				left = append(left, u)
			}
			return fmt.Errorf("devstack: not ready (%v): still waiting for %s", ctx.Err(), strings.Join(left, ", "))
		case <-tick.C:
		}
	}
}

func printBanner(w io.Writer, r Ready) {
	var b strings.Builder
	b.WriteString("\nauthmesh is running\n\n")
	fmt.Fprintf(&b, "  devtenant  http://localhost:8400   issuer %s\n", Issuer)
	for _, s := range Services {
		fmt.Fprintf(&b, "  %-9s  %s\n", s.Name, s.URL())
	}
	fmt.Fprintf(&b, "  nats       %s  monitoring http://localhost:%d  websocket ws://localhost:%d\n", NATSURL, NATSMonPort, NATSWSPort)
	if r.WebServed {
		b.WriteString("  web        http://localhost:8404\n")
	}
	if r.JaegerURL != "" {
		fmt.Fprintf(&b, "  jaeger     %s  (query API; `make trace` prints the latest order's trace)\n", r.JaegerURL)
	}
	if r.AliceToken == "" {
		b.WriteString("\nThe tenant requires DPoP of its public clients (proof_of_possession): no bearer token to\nshow; sign in on the web page, which sends a proof with every request.\n")
	} else {
		b.WriteString("\nAs alice (token valid 24 h; `make token USER=alice` prints a new one):\n\n")
		fmt.Fprintf(&b, "  curl -s -X POST http://localhost:8402/v1/orders -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"items\":[{\"sku\":\"mug\",\"quantity\":2}]}'\n", r.AliceToken)
	}
	b.WriteString("\nCtrl-C stops everything; state stays in .data/ (delete it to start afresh).\n\n")
	io.WriteString(w, b.String())
}
