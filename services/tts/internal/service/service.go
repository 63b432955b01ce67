// Package service composes the Transaction Token Service: platform's boot
// (HTTP ops, NATS, the tenant's access-token validator with revocations),
// the signing keys, the exchange use case and the ports: the exchange
// endpoint and the auth callout on NATS, the JWKS on HTTP.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/tts/internal/exchange"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
	"github.com/authmesh/authmesh/services/tts/internal/ports"
)

// Name is the service's name (config prefix TTS_).
const Name = mesh.TTS

// DefaultKeysFile is the local stack's key file (created when missing; with
// AUTH0_DOMAIN set TTS_KEYS_FILE must name a provisioned file).
const DefaultKeysFile = ".data/tts/keys.json"

// Run is the TTS's run function for platform.Main.
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
	return platform.Boot(ctx, cfg, opts, func(a *platform.App) error { return wire(a, path, set) })
}

// wire adds the TTS to a, signing with set (read from path) until the file
// changes. The callout is a set-up step; the exchange endpoint, the kicks
// and the key reloads start once it succeeded.
func wire(a *platform.App, path string, set *keys.Set) error {
	cfg := a.Config
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
	m, err := ports.NewMetrics(a.Registry)
	if err != nil {
		return err
	}
	co, err := ports.NewCallout(a)
	if err != nil {
		return err
	}
	sys, err := connectSystem(cfg)
	if err != nil {
		return err
	}
	// Closed at shutdown whether or not the set-up finished (a task added
	// before the first step is not gated by it).
	a.Go("nats-system", func(ctx context.Context) error {
		<-ctx.Done()
		sys.Close()
		return nil
	})

	a.SetUp("nats-callout", func(context.Context) error { return co.Start() })
	kicker := ports.NewKicker(sys, a.Logger)
	a.Revocations.OnRevoke(kicker.Revoked)
	a.Go("nats-kicks", kicker.Run)

	ports.RegisterHTTP(a, current.Load)
	a.ServeMicro(micro.Config{
		Name: Name, Version: "1.0.0",
		Description: "authmesh Transaction Token Service: access token + workload token -> transaction token",
	}, func(ms micro.Service) error {
		// Handlers run under the app's context, so an exchange in flight
		// when the endpoint stops still finishes while it drains.
		return ports.AddExchangeEndpoint(a.Context(), ms, ex, m, a.Logger)
	})

	a.Go("keys-reload", func(ctx context.Context) error {
		reloadKeys(ctx, path, &current, a.Logger)
		return nil
	})
	a.Logger.Info("transaction token service", slog.String("signing_kid", set.CurrentKID()),
		slog.Int("published_keys", len(set.KIDs())), slog.String("keys_file", path))
	return nil
}

// connectSystem connects as the TTS's system user, which the kicks of
// revoked people's connections go through.
func connectSystem(cfg platform.Config) (*nats.Conn, error) {
	sysKey, err := callout.NKey(cfg.Callout.System)
	if err != nil {
		return nil, err
	}
	sys, err := nats.Connect(strings.ReplaceAll(cfg.NATSURL, " ", ""), sysKey,
		nats.Name("tts-system"), nats.CustomInboxPrefix(mesh.SystemInboxPrefix),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("tts: system connection: %w", err)
	}
	return sys, nil
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
