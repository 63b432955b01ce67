package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz/m2m"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/users/internal/adapters"
	"github.com/authmesh/authmesh/services/users/internal/adapters/mgmt"
	"github.com/authmesh/authmesh/services/users/internal/app"
	"github.com/authmesh/authmesh/services/users/internal/ports"
)

func run(ctx context.Context, cfg platform.Config) error {
	a, err := build(ctx, cfg, platform.Options{})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// The Management API client renews a token the tenant refuses (a revoked
// signing key) through this.
var _ mgmt.Invalidator = (*m2m.ClientCredentials)(nil)

// Intervals of the background loops.
const (
	setupRetry     = time.Second
	reconcileEvery = 5 * time.Second
)

// build wires the service onto a platform.App; tests call it with their own
// listener and run the returned App.
func build(ctx context.Context, cfg platform.Config, opts platform.Options) (*platform.App, error) {
	opts.Errors = append(opts.Errors, ports.ErrorMappings()...)
	a, err := platform.New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	// The Management API wants its own token: same client, other audience.
	mgmtTokens, err := m2m.NewClientCredentials(m2m.Config{
		TokenURL:     cfg.Auth0.TokenURL,
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		Audience:     cfg.Auth0.ManagementAudience,
		HTTPClient:   opts.HTTPClient,
	})
	if err != nil {
		return nil, fmt.Errorf("users: management API token source: %w", err)
	}
	mc, err := mgmt.New(mgmt.Config{BaseURL: cfg.Auth0.ManagementURL, Tokens: mgmtTokens})
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	storage := &adapters.Storage{}
	svc, err := app.New(app.Deps{
		Directory:   adapters.NewTenant(mc),
		Profiles:    adapters.NewProfiles(storage),
		Moderations: adapters.NewModerations(storage),
		Revoker:     adapters.NewRevocations(storage),
		Events:      adapters.NewEvents(a.JetStream),
		Logger:      a.Logger,
	})
	if err != nil {
		return nil, err
	}

	ports.NewHTTP(svc).Register(a)
	a.DeclarePolicy("NATS endpoint "+ports.ProfileSubject, ports.PolicyProfile)

	nm, err := natsauth.NewMetrics(a.Registry)
	if err != nil {
		return nil, fmt.Errorf("users: nats metrics: %w", err)
	}
	ms, err := natsauth.NewService(a.NATS, micro.Config{
		Name:        ports.ServiceName,
		Version:     "1.0.0",
		Description: "authmesh users: the caller's profile",
	}, a.TxnValidator, natsauth.WithMetrics(nm), natsauth.WithContext(a.Context()), natsauth.WithLogger(a.Logger))
	if err != nil {
		return nil, fmt.Errorf("users: micro service: %w", err)
	}
	if err := ports.AddProfileEndpoint(ms, svc, a.Logger); err != nil {
		return nil, fmt.Errorf("users: profile endpoint: %w", err)
	}

	a.AddReadyCheck("users-storage", storage.Ready)
	a.Go("jetstream-setup", func(ctx context.Context) error {
		return setup(ctx, a, storage)
	})
	a.Go("moderation-reconciler", func(ctx context.Context) error {
		reconcile(ctx, a.Logger, storage, svc, a.Tokens)
		return nil
	})
	a.Go("micro-service", func(ctx context.Context) error {
		<-ctx.Done()
		return ms.Stop()
	})
	return a, nil
}

// setup creates the stream and buckets, retrying while NATS is not there yet.
func setup(ctx context.Context, a *platform.App, st *adapters.Storage) error {
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := st.Setup(sctx, a.JetStream, a.Config.NATSReplicas)
		cancel()
		if err == nil {
			a.Logger.Info("jetstream storage ready")
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		a.Logger.Warn("jetstream storage not ready; retrying", slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(setupRetry):
		}
	}
}

// reconcile finishes block/unblock intents whose request failed part-way,
// with the service's own identity.
func reconcile(ctx context.Context, log *slog.Logger, st *adapters.Storage, svc *app.Service, tokens m2m.TokenSource) {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st.Ready(ctx) != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(natsauth.AsService(ctx, tokens), time.Minute)
		err := svc.Reconcile(rctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("finishing block/unblock intents failed; will retry", slog.String("error", err.Error()))
		}
	}
}
