// Package service composes the users service: platform runtime, adapters
// (the tenant's Management API, JetStream), use cases, HTTP routes, the
// profile endpoint on NATS and the moderation reconciler.
package service

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
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/users/internal/adapters"
	"github.com/authmesh/authmesh/services/users/internal/adapters/mgmt"
	"github.com/authmesh/authmesh/services/users/internal/app"
	"github.com/authmesh/authmesh/services/users/internal/ports"
)

// Name is the service's name (config prefix USERS_).
const Name = mesh.Users

// Tuning of the background loops; tests shorten them.
type Tuning struct {
	ReconcileEvery time.Duration // moderation reconciler period (default 5 s)
}

// Run is the users service's run function for platform.Main.
func Run(ctx context.Context, cfg platform.Config) error {
	return RunWith(ctx, cfg, platform.Options{}, Tuning{})
}

// RunWith is Run with explicit platform options and tuning.
func RunWith(ctx context.Context, cfg platform.Config, opts platform.Options, tun Tuning) error {
	if tun.ReconcileEvery <= 0 {
		tun.ReconcileEvery = 5 * time.Second
	}
	opts.Errors = append(ports.ErrorMappings(), opts.Errors...)
	return platform.Boot(ctx, cfg, opts, func(a *platform.App) error { return wire(a, opts, tun) })
}

// The Management API client renews a token the tenant refuses (a revoked
// signing key) through this.
var _ m2m.Invalidator = (*m2m.ClientCredentials)(nil)

// wire adds the users service to a.
func wire(a *platform.App, opts platform.Options, tun Tuning) error {
	cfg := a.Config
	// The Management API wants its own token: same client, other audience.
	mgmtTokens, err := m2m.NewClientCredentials(m2m.Config{
		TokenURL:     cfg.Auth0.TokenURL,
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		Audience:     cfg.Auth0.ManagementAudience,
		HTTPClient:   opts.HTTPClient,
	})
	if err != nil {
		return fmt.Errorf("users: management API token source: %w", err)
	}
	mc, err := mgmt.New(mgmt.Config{BaseURL: cfg.Auth0.ManagementURL, Tokens: mgmtTokens})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	profilesKV := platform.NewLazyBucket(adapters.ProfilesBucket)
	revocationKV := platform.NewLazy[*natsauth.RevocationStore]("bucket " + natsauth.RevocationBucket)
	svc, err := app.New(app.Deps{
		Directory:   adapters.NewTenant(mc),
		Profiles:    adapters.NewProfiles(profilesKV),
		Moderations: adapters.NewModerations(profilesKV),
		Revoker:     adapters.NewRevocations(revocationKV),
		Events:      adapters.NewEvents(a.JetStream),
		Logger:      a.Logger,
	})
	if err != nil {
		return err
	}

	ports.RegisterHTTP(a, svc)
	a.DeclarePolicy("NATS endpoint "+ports.ProfileSubject, ports.PolicyProfile)

	nm, err := natsauth.NewMetrics(a.Registry)
	if err != nil {
		return fmt.Errorf("users: nats metrics: %w", err)
	}
	a.SetUp("users-storage", func(ctx context.Context) error {
		// USERS_EVENTS and the durables others read from it (orders-users).
		if err := mesh.Provision(ctx, a.JetStream, Name, cfg.NATSReplicas); err != nil {
			return err
		}
		kv, err := adapters.EnsureBuckets(ctx, a.JetStream, cfg.NATSReplicas)
		if err != nil {
			return err
		}
		rs, err := natsauth.NewRevocationStore(ctx, a.JetStream, cfg.NATSReplicas)
		if err != nil {
			return fmt.Errorf("revocation bucket: %w", err)
		}
		profilesKV.Set(kv)
		revocationKV.Set(rs)
		return nil
	})
	a.ServeNATS(micro.Config{Name: ports.ServiceName, Version: "1.0.0", Description: "authmesh users: the caller's profile"}, nm,
		func(ms *natsauth.Service) error { return ports.RegisterNATS(ms, svc, a.Logger) })
	a.Go("moderation-reconciler", func(ctx context.Context) error {
		reconcile(ctx, a.Logger, svc, a.Tokens, tun.ReconcileEvery)
		return nil
	})
	return nil
}

// reconcile finishes block/unblock intents whose request failed part-way,
// with the service's own identity.
func reconcile(ctx context.Context, log *slog.Logger, svc *app.Service, tokens m2m.TokenSource, every time.Duration) {
	platform.Every(ctx, every, func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(natsauth.AsService(ctx, tokens), time.Minute)
		err := svc.Reconcile(rctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("finishing block/unblock intents failed; will retry", slog.String("error", err.Error()))
		}
	})
}
