package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/telemetry"
)

// Options tune an App; every field has a default.
type Options struct {
	// Logger defaults to JSON on stdout at the configured level.
	Logger *slog.Logger
	// Registry is the app's own Prometheus registry (default: a new one with
	// the Go and process collectors).
	Registry *prometheus.Registry
	// Errors maps the service's domain sentinels to HTTP answers.
	Errors []ErrorMapping
	// BodyLimit bounds request bodies (default "64K"; Echo's size syntax).
	BodyLimit string
	// CORSAllowHeaders are the request headers browsers may send beyond
	// Authorization, Content-Type and X-Request-Id (orders: Idempotency-Key).
	CORSAllowHeaders []string
	// Listener, when set, is served instead of listening on Config.HTTPAddr
	// (tests pass 127.0.0.1:0).
	Listener net.Listener
	// ShutdownTimeout bounds graceful shutdown (default 5 s, split between
	// in-flight HTTP requests and draining NATS).
	ShutdownTimeout time.Duration
	// HTTPClient is used for the JWKS and token endpoints (default: 5 s timeout).
	HTTPClient *http.Client
	// TokenService marks the Transaction Token Service itself: it verifies
	// access tokens but neither verifies nor requests transaction tokens.
	TokenService bool
	// SetUpTimeout bounds one try of a set-up step (default
	// DefaultSetUpTimeout; see SetUp).
	SetUpTimeout time.Duration
	// BeforeRun, when set, sees the wired app before Boot runs it (tests).
	BeforeRun func(*App)
}

// ReadyCheck reports nil when a dependency is ready.
type ReadyCheck func(ctx context.Context) error

// App is one running service: configuration, logger, metrics, Echo, NATS and
// the authz pieces. Build it with New, add routes, checks and background
// tasks, then call Run.
type App struct {
	Config    Config
	Logger    *slog.Logger
	Registry  *prometheus.Registry
	Echo      *echo.Echo
	NATS      *nats.Conn
	JetStream jetstream.JetStream
	Keys      *authz.KeyProvider
	// Validator verifies Auth0 access tokens: the HTTP edge's.
	Validator *authz.Validator
	// DPoP verifies DPoP proofs at the HTTP edge (RFC 9449; see dpop.go);
	// nil in the Transaction Token Service.
	DPoP *authz.DPoP
	// TxnValidator verifies transaction tokens: every NATS receiver's
	// (natsauth.NewService, natsauth.NewConsumer). TxnKeys are its keys,
	// TxnClient exchanges tokens with the Transaction Token Service. All nil
	// in the Transaction Token Service itself.
	TxnValidator *authz.TxnValidator
	TxnKeys      *authz.KeyProvider
	TxnClient    *natsauth.TxnClient
	// Tokens is the service's own M2M token (client credentials), for work no
	// user started.
	Tokens m2m.TokenSource

	natsToken *natsToken // what the NATS connection presents (nil for the TTS)
	// Revocations is the watcher of the revocation bucket the validator consults.
	Revocations *natsauth.RevocationWatcher
	// Routes holds every route's policy (authz's registry).
	Routes *authz.Registry
	// AuthzMetrics records authorization decisions; pass it to natsauth's
	// endpoint and consumer wrappers too.
	AuthzMetrics *authz.Metrics

	opts          Options
	httpMetrics   *httpMetrics
	stopTelemetry telemetry.Shutdown // flushes spans at shutdown
	outbound      *natsauth.Outbound // nil in the Transaction Token Service

	mu     sync.Mutex
	checks []namedCheck
	steps  []*setUpStep
	tasks  []namedTask
	// failing holds each failing readiness check's last error text, so that
	// it is logged once per change rather than on every probe.
	failing map[string]string

	ctx      context.Context // lives until shutdown; background work hangs off it
	cancel   context.CancelFunc
	draining atomic.Bool
	addr     atomic.Value // net.Addr once serving
	ran      atomic.Bool
}

type namedCheck struct {
	name string
	fn   ReadyCheck
}

type namedTask struct {
	name  string
	fn    func(ctx context.Context) error
	after []*setUpStep // the steps added before it, which it waits for
}

// New connects what a service needs and returns the App. It does not wait for
// NATS or the signing keys: both are retried in the background and /readyz
// reports 503 until they are there, so a service starts in any order.
func New(ctx context.Context, cfg Config, opts Options) (*App, error) {
	if cfg.Service == "" {
		return nil, errors.New("platform: config has no service name; use LoadConfig")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	// Every line logged with a request's or message's context names its trace.
	opts.Logger = slog.New(telemetry.LogHandler(opts.Logger.Handler())).With(slog.String("service", cfg.Service))
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if opts.BodyLimit == "" {
		opts.BodyLimit = "64K"
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.SetUpTimeout <= 0 {
		opts.SetUpTimeout = DefaultSetUpTimeout
	}
	opts.Errors = append(slices.Clone(opts.Errors), notReadyMapping)

	a := &App{
		Config:   cfg,
		Logger:   opts.Logger,
		Registry: opts.Registry,
		opts:     opts,
		Routes:   authz.NewRegistry(),
	}
	a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))

	hm, err := newHTTPMetrics(a.Registry)
	if err != nil {
		a.cancel()
		return nil, fmt.Errorf("platform: metrics: %w", err)
	}
	if a.stopTelemetry, err = telemetry.Start(ctx, cfg.Telemetry, a.Logger); err != nil {
		a.cancel()
		return nil, fmt.Errorf("platform: %w", err)
	}
	a.httpMetrics = hm
	if !opts.TokenService {
		ts, err := m2m.NewClientCredentials(m2m.Config{
			TokenURL:     cfg.Auth0.TokenURL,
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Audience:     cfg.Auth0.Audience,
			HTTPClient:   opts.HTTPClient,
		})
		if err != nil {
			a.abort()
			return nil, fmt.Errorf("platform: token source: %w", err)
		}
		a.Tokens = ts
	}
	if err := a.connectNATS(); err != nil {
		a.abort()
		return nil, err
	}
	if err := a.wireAuthz(); err != nil {
		a.abort()
		a.NATS.Close()
		return nil, err
	}
	a.Echo = a.newEcho()
	a.mountOps()
	return a, nil
}

// abort undoes what New started before it failed.
func (a *App) abort() {
	a.cancel()
	a.flushTelemetry()
}

// flushTelemetry exports the spans still buffered (tracing on), within a
// second: the last spans of a shutdown are often the interesting ones.
func (a *App) flushTelemetry() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.stopTelemetry(ctx); err != nil {
		a.Logger.Warn("telemetry flush at shutdown", slog.String("error", err.Error()))
	}
}

// Context is cancelled when the app shuts down; background work started
// outside Go should hang off it.
func (a *App) Context() context.Context { return a.ctx }

// Router is where a service's ports declare their HTTP routes, each with its
// policy: *App is one, and so is what a port's test declares them on.
type Router interface {
	Route(method, path string, policy authz.Policy, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) *echo.Route
}

var _ Router = (*App)(nil)

// Route adds an HTTP route with its policy (declared in a.Routes, which
// authz's middleware enforces). A route whose policy is the zero
// authz.Policy makes Run refuse to start.
func (a *App) Route(method, path string, policy authz.Policy, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) *echo.Route {
	return authz.Handle(a.Echo, a.Routes, method, path, h, policy, mw...)
}

// AddReadyCheck adds a dependency /readyz waits for (a bucket, a consumer).
func (a *App) AddReadyCheck(name string, fn ReadyCheck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks = append(a.checks, namedCheck{name, fn})
}

// Go runs fn in the background from Run until shutdown (its context is
// cancelled after in-flight HTTP requests finished, before NATS drains),
// starting once every set-up step added before it succeeded (SetUp). An
// error other than the context's ends the app with that error.
func (a *App) Go(name string, fn func(ctx context.Context) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tasks = append(a.tasks, namedTask{name: name, fn: fn, after: slices.Clone(a.steps)})
}

// Addr is the address being served (nil before Run listens).
func (a *App) Addr() net.Addr {
	v, _ := a.addr.Load().(net.Addr)
	return v
}

// DeclarePolicy names a policy used outside the HTTP routes (a NATS
// endpoint's, a consumer's on-behalf policy) in a.Routes, so that the
// start-up check holds it against the tenant file too. Call it before Run.
func (a *App) DeclarePolicy(what string, p authz.Policy) { a.Routes.Declare(what, p) }

// checkRoutes refuses routes without a declared policy, including ones
// added directly to a.Echo, and, with a tenant file, any permission a route
// or declared policy uses that the tenant's API does not define.
func (a *App) checkRoutes() error {
	if err := a.Routes.Check(a.Echo.Routes()); err != nil {
		return fmt.Errorf("platform: refusing to start: %w", err)
	}
	if f := a.Config.Auth0.TenantFile; f != "" {
		if err := CheckTenantPermissions(a.Routes, f, a.Config.Auth0.Audience); err != nil {
			return fmt.Errorf("platform: refusing to start: %w", err)
		}
	}
	return nil
}

// CheckTenantPermissions fails naming every permission a route or declared
// policy in reg uses that the API audience in the tenant file (Deploy CLI
// tenant.yaml) does not define. Services run it at start-up
// (AUTH0_TENANT_FILE) and in tests.
func CheckTenantPermissions(reg *authz.Registry, tenantFile, audience string) error {
	known, err := authz.LoadTenantPermissions(tenantFile, audience)
	if err != nil {
		return err
	}
	return reg.CheckPermissions(known)
}

func (a *App) checkReady(ctx context.Context) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	a.mu.Lock()
	checks := append([]namedCheck{
		{"nats", func(context.Context) error {
			if !a.NATS.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		}},
		{"keys", func(context.Context) error { return a.Keys.Ready() }},
		{"revocations", func(context.Context) error { return a.Revocations.Ready() }},
	}, a.checks...)
	if a.TxnKeys != nil {
		checks = append(checks, namedCheck{"tts_keys", func(context.Context) error { return a.TxnKeys.Ready() }})
	}
	a.mu.Unlock()
	out := make(map[string]string, len(checks))
	ok := true
	if a.draining.Load() {
		out["shutdown"] = "in progress"
		ok = false
	}
	errs := make(map[string]string)
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			// The answer names the check only: its error text carries URLs,
			// DNS names and dial errors that are nobody's business outside.
			out[c.name] = "failed"
			errs[c.name] = err.Error()
			ok = false
		} else {
			out[c.name] = "ok"
		}
	}
	a.logReadiness(checks, errs)
	return out, ok
}

// logReadiness logs each check's error text when it starts failing or its
// error changes, and its recovery: once per change, not once per probe.
func (a *App) logReadiness(checks []namedCheck, errs map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failing == nil {
		a.failing = make(map[string]string)
	}
	for _, c := range checks {
		msg, failed := errs[c.name]
		prev, was := a.failing[c.name]
		switch {
		case failed && (!was || prev != msg):
			a.failing[c.name] = msg
			a.Logger.Warn("readiness check failing", slog.String("check", c.name), slog.String("error", msg))
		case !failed && was:
			delete(a.failing, c.name)
			a.Logger.Info("readiness check passing again", slog.String("check", c.name))
		}
	}
}

// Ready reports whether every readiness check passes (what /readyz answers).
func (a *App) Ready(ctx context.Context) bool {
	_, ok := a.checkReady(ctx)
	return ok
}

func (a *App) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{Registry: a.Registry})
}

// Run serves until ctx ends (SIGINT/SIGTERM in Main) or a background task
// fails, then shuts down gracefully: /readyz turns 503, the listener stops
// accepting, in-flight requests finish, background tasks stop, NATS drains.
func (a *App) Run(ctx context.Context) error {
	if !a.ran.CompareAndSwap(false, true) {
		return errors.New("platform: Run called twice")
	}
	defer a.cancel()
	if err := a.checkRoutes(); err != nil {
		a.NATS.Close()
		return err
	}
	ln := a.opts.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", a.Config.HTTPAddr)
		if err != nil {
			a.NATS.Close()
			return fmt.Errorf("platform: listen %s: %w", a.Config.HTTPAddr, err)
		}
	}
	a.addr.Store(ln.Addr())
	srv := &http.Server{
		Handler:           a.Echo,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.Logger.Handler(), slog.LevelWarn),
	}

	taskCtx, stopTasks := context.WithCancel(a.ctx)
	defer stopTasks()
	fail := make(chan error, 1+len(a.tasks))
	var wg sync.WaitGroup
	a.mu.Lock()
	tasks, steps := slices.Clone(a.tasks), slices.Clone(a.steps)
	a.mu.Unlock()
	wg.Go(func() { a.runSteps(taskCtx, steps) })
	for _, t := range tasks {
		wg.Go(func() {
			if !afterSteps(taskCtx, t.after) {
				return
			}
			err := t.fn(taskCtx)
			if err != nil && taskCtx.Err() == nil {
				fail <- fmt.Errorf("%s: %w", t.name, err)
			}
		})
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail <- fmt.Errorf("http: %w", err)
		}
	}()
	a.Logger.Info("started", slog.String("addr", ln.Addr().String()), slog.String("config", a.Config.String()))

	var runErr error
	select {
	case <-ctx.Done():
		a.Logger.Info("shutting down", slog.String("cause", context.Cause(ctx).Error()))
	case runErr = <-fail:
		a.Logger.Error("shutting down after a failure", slog.String("error", runErr.Error()))
	}

	a.draining.Store(true)
	deadline := time.Now().Add(a.opts.ShutdownTimeout)
	httpCtx, cancel := context.WithDeadline(context.Background(), deadline.Add(-a.opts.ShutdownTimeout/3))
	if err := srv.Shutdown(httpCtx); err != nil {
		a.Logger.Warn("in-flight requests cut short", slog.String("error", err.Error()))
		_ = srv.Close()
	}
	cancel()
	stopTasks()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) / 2):
		a.Logger.Warn("background tasks still running at shutdown")
	}
	a.cancel()
	a.drainNATS(time.Until(deadline))
	a.flushTelemetry()
	a.Logger.Info("stopped")
	return runErr
}
