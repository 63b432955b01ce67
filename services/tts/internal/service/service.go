// Package service wires the Transaction Token Service: platform's boot (HTTP
// ops, NATS, the tenant's access-token validator with revocations), the
// signing keys, the exchange endpoint on NATS and the JWKS on HTTP.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/tts/internal/exchange"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
)

// DefaultKeysFile is the local stack's key file (created when missing; with
// AUTH0_DOMAIN set TTS_KEYS_FILE must name a provisioned file).
const DefaultKeysFile = ".data/tts/keys.json"

// maxRequestBytes bounds an exchange request: two access tokens and a scope.
const maxRequestBytes = 32 << 10

// Run starts the service and blocks until ctx ends.
func Run(ctx context.Context, cfg platform.Config) error {
	return RunWith(ctx, cfg, platform.Options{})
}

// KeysFile returns the key file the configuration names.
func KeysFile(cfg platform.Config) (string, error) {
	if p := cfg.Getenv("KEYS_FILE"); p != "" {
		return p, nil
	}
	if cfg.Auth0.Domain != "" {
		return "", errors.New("TTS_KEYS_FILE is required when AUTH0_DOMAIN is set (no dev key applies)")
	}
	return DefaultKeysFile, nil
}

// RunWith is Run with platform options (tests pass a listener and a logger).
func RunWith(ctx context.Context, cfg platform.Config, opts platform.Options) error {
	path, err := KeysFile(cfg)
	if err != nil {
		return err
	}
	load := keys.Load
	if cfg.Auth0.Domain == "" {
		load = keys.LoadOrCreate
	}
	set, err := load(path)
	if err != nil {
		return err
	}
	opts.TokenService = true
	a, err := platform.New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	var current atomic.Pointer[keys.Set]
	current.Store(set)

	workloads, subjects := map[string][]string{}, map[string][]string{}
	for _, w := range mesh.Requesters() {
		workloads[cfg.PeerClientID(w)] = mesh.WorkloadScopes(w)
		subjects[cfg.PeerClientID(w)] = mesh.EventSubjects(w)
	}
	win, err := readWindows(cfg)
	if err != nil {
		return err
	}
	ex, err := exchange.New(exchange.Config{
		Verifier:        a.Validator,
		Signer:          func() exchange.Signer { return current.Load() },
		Workloads:       workloads,
		Subjects:        subjects,
		SubjectScopes:   mesh.HopScopes,
		Issuer:          cfg.Txn.Issuer,
		TrustDomain:     cfg.Txn.TrustDomain,
		ProofMaxAge:     win.ProofMaxAge,
		ProofFutureSkew: win.ProofFutureSkew,
		EventLifetime:   win.EventLifetime,
	})
	if err != nil {
		return err
	}
	m, err := newMetrics(a.Registry)
	if err != nil {
		return err
	}

	if err := startCallout(a, cfg); err != nil {
		return err
	}

	a.Route(http.MethodGet, "/.well-known/jwks.json", authz.Public(), func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=60")
		return c.JSON(http.StatusOK, current.Load().JWKS())
	})

	svc, err := micro.AddService(a.NATS, micro.Config{
		Name: "tts", Version: "1.0.0",
		Description: "authmesh Transaction Token Service: access token + workload token -> transaction token",
	})
	if err != nil {
		return fmt.Errorf("tts: micro service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	h := &handler{ex: ex, m: m, log: a.Logger, ctx: a.Context()}
	if err := svc.AddEndpoint("exchange", micro.HandlerFunc(h.serve),
		micro.WithEndpointSubject(natsauth.DefaultTxnSubject)); err != nil {
		return fmt.Errorf("tts: endpoint: %w", err)
	}

	a.Go("keys-reload", func(ctx context.Context) error {
		reloadKeys(ctx, path, &current, a.Logger)
		return nil
	})
	a.Logger.Info("transaction token service", slog.String("signing_kid", set.CurrentKID()),
		slog.Int("published_keys", len(set.KIDs())), slog.String("keys_file", path))
	return a.Run(ctx)
}

// exchangeWindows holds the exchange's optional durations, each a Go
// duration ("60s", "12h") from the environment; zero when unset, which
// leaves exchange.Config's default.
type exchangeWindows struct {
	// ProofMaxAge and ProofFutureSkew (<P>DPOP_PROOF_MAX_AGE,
	// <P>DPOP_PROOF_FUTURE_SKEW) bound the iat of the DPoP proof a
	// DPoP-bound subject token is exchanged with (defaults
	// exchange.DefaultProofMaxAge, exchange.DefaultProofFutureSkew).
	ProofMaxAge, ProofFutureSkew time.Duration
	// EventLifetime (<P>EVENT_TOKEN_LIFETIME) is how long a token bound to
	// one event lives (default exchange.DefaultEventLifetime): the longest
	// outage an outbox relay rides out.
	EventLifetime time.Duration
}

// readWindows reads exchangeWindows, refusing a value outside its bounds.
func readWindows(cfg platform.Config) (exchangeWindows, error) {
	var w exchangeWindows
	var errs []error
	read := func(dst *time.Duration, name string, lo, hi time.Duration) {
		v := strings.TrimSpace(cfg.Getenv(name))
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			errs = append(errs, fmt.Errorf("tts: %s%s %q: want a duration within [%v, %v], such as %v", cfg.Prefix, name, v, lo, hi, hi/2))
			return
		}
		*dst = d
	}
	read(&w.ProofMaxAge, "DPOP_PROOF_MAX_AGE", time.Second, 10*time.Minute)
	// A zero skew is the default's, as for exchange.Config: at least 1 s.
	read(&w.ProofFutureSkew, "DPOP_PROOF_FUTURE_SKEW", time.Second, 5*time.Minute)
	// At least an hour: well above the relays' grace and margin, so a short
	// NATS outage never runs a seal out.
	read(&w.EventLifetime, "EVENT_TOKEN_LIFETIME", time.Hour, authz.MaxEventTxnLifetime)
	return w, errors.Join(errs...)
}

// startCallout answers the NATS auth callout on the TTS's own connection:
// the workloads' client-credentials tokens and people's access tokens, with
// the validator (revocations included) the exchange uses. A revocation
// closes the person's live connections, through the TTS's system user.
func startCallout(a *platform.App, cfg platform.Config) error {
	clients := map[string]string{}
	for _, w := range mesh.Workloads {
		if !w.AnswersCallout {
			clients[cfg.PeerClientID(w.Name)] = w.Name
		}
	}
	// Workloads' tokens are checked without the revocation list while it
	// loads: its bucket is the users service's, which connects through
	// this callout (see callout.Config.Workloads).
	workloads, err := authz.NewValidator(a.Keys, authz.WithIssuers(cfg.Auth0.Issuers...),
		authz.WithAudiences(cfg.Auth0.Audience), authz.WithMetrics(a.AuthzMetrics))
	if err != nil {
		return fmt.Errorf("tts: workload validator: %w", err)
	}
	co, err := callout.New(callout.Config{Conn: a.NATS, Validator: a.Validator, Workloads: workloads,
		Clients: clients, Keys: cfg.Callout, Logger: a.Logger, Registry: a.Registry})
	if err != nil {
		return err
	}
	a.SetUp("nats-callout", func(context.Context) error { return co.Start() })
	sysKey, err := callout.NKey(cfg.Callout.System)
	if err != nil {
		return err
	}
	sys, err := nats.Connect(strings.ReplaceAll(cfg.NATSURL, " ", ""), sysKey,
		nats.Name("tts-system"), nats.CustomInboxPrefix(mesh.SystemInboxPrefix),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return fmt.Errorf("tts: system connection: %w", err)
	}
	a.Go("nats-system", func(ctx context.Context) error {
		<-ctx.Done()
		sys.Close()
		return nil
	})
	kicks := make(chan string, 256)
	a.Revocations.OnRevoke(func(sub string) {
		select {
		case kicks <- sub:
		default:
			a.Logger.Warn("nats kick queue full; the connection stays until its token expires", slog.String("sub_hash", platform.SubjectHash(sub)))
		}
	})
	a.Go("nats-kicks", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case sub := <-kicks:
				kctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				n, err := callout.Kick(kctx, sys, sub)
				cancel()
				if err != nil {
					a.Logger.Warn("nats kick", slog.String("sub_hash", platform.SubjectHash(sub)), slog.String("error", err.Error()))
				} else if n > 0 {
					a.Logger.Info("revoked person's nats connections closed", slog.String("sub_hash", platform.SubjectHash(sub)), slog.Int("connections", n))
				}
			}
		}
	})
	return nil
}

// reloadKeys picks up a rotated key file (written by `tts keys rotate`,
// or a Secret update) without a restart. A file that does not load keeps
// the keys in use.
func reloadKeys(ctx context.Context, path string, current *atomic.Pointer[keys.Set], log *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(path); err == nil {
		last = fi.ModTime()
	}
	platform.Every(ctx, 2*time.Second, func(context.Context) {
		fi, err := os.Stat(path)
		if err != nil || fi.ModTime().Equal(last) {
			return
		}
		last = fi.ModTime()
		s, err := keys.Load(path)
		if err != nil {
			log.Error("key file changed but does not load; keeping the keys in use", slog.String("error", err.Error()))
			return
		}
		current.Store(s)
		log.Info("signing keys reloaded", slog.String("signing_kid", s.CurrentKID()), slog.Int("published_keys", len(s.KIDs())))
	})
}

type handler struct {
	ex  *exchange.Exchanger
	m   *metrics
	log *slog.Logger
	ctx context.Context
}

// serve answers one exchange under a server span, as natsauth's endpoints
// are answered: a child of the requesting workload's client span, with the
// decision (authz.RecordDecision: the subject's hash, key id and client on
// success; the code and reason of a refusal) and the requesting workload's
// client id. Neither token nor the issued one is ever recorded.
func (h *handler) serve(req micro.Request) {
	start := time.Now()
	ctx, req, span := natsauth.StartServerSpan(h.ctx, req, "exchange")
	defer span.End()
	res, err := h.exchange(ctx, req)
	workload, result, reason := "unknown", "issued", "ok"
	if res != nil {
		workload = res.Workload
		authz.RecordDecision(ctx, authz.Policy{}, res.Claims, nil)
		if span.IsRecording() {
			span.SetAttributes(attrWorkload.String(res.Workload))
		}
	}
	if err != nil {
		var e *exchange.Error
		if !errors.As(err, &e) {
			e = &exchange.Error{Status: 500, Code: "server_error", Reason: "internal", Description: "internal error"}
			h.log.ErrorContext(ctx, "exchange failed", slog.String("error", err.Error()))
		}
		authz.RecordDecision(ctx, authz.Policy{}, nil, &authz.Error{Code: authz.Code(e.Code), Reason: e.Reason})
		result, reason = "refused", e.Reason
		// The reason, never a token.
		h.log.WarnContext(ctx, "transaction token refused", slog.String("reason", e.Reason), slog.Int("status", e.Status),
			slog.String("request_id", platform.RequestIDFromContext(ctx)))
		_ = req.Error(strconv.Itoa(e.Status), e.Error(), nil)
	} else {
		_ = req.RespondJSON(res.TxnResponse)
		h.log.DebugContext(ctx, "transaction token issued", slog.String("workload", res.Workload),
			slog.String("sub_hash", res.Claims.SubjectHash()), slog.String("scope", res.Scope))
	}
	h.m.exchanges.WithLabelValues(workload, result, reason).Inc()
	h.m.latency.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

// attrWorkload is the requesting workload's client id on the exchange's span.
const attrWorkload = attribute.Key("authz.req_wl")

func (h *handler) exchange(ctx context.Context, req micro.Request) (*exchange.Result, error) {
	if len(req.Data()) > maxRequestBytes {
		return nil, &exchange.Error{Status: 400, Code: "invalid_request", Reason: "too_large", Description: "the request is too large"}
	}
	var r natsauth.TxnRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		return nil, &exchange.Error{Status: 400, Code: "invalid_request", Reason: "not_json", Description: "the request is not a JSON token exchange request"}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.ex.Exchange(ctx, r, platform.RequestIDFromContext(ctx))
}

type metrics struct {
	exchanges *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		exchanges: metric.CounterVec("authmesh_tts_exchanges_total",
			"Token exchanges by requesting workload, result and reason.", "workload", "result", "reason"),
		latency: metric.HistogramVec("authmesh_tts_exchange_seconds", "Time to answer one exchange.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25}, "result"),
	}
	if err := metric.Register(reg, m.exchanges, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}
