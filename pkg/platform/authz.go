package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// wireAuthz builds the key provider, the revocation watcher, the validator
// and the service's M2M token source, and starts the background loops on the
// app's context. Nothing here waits for the identity provider or NATS:
// readiness reports them until they are there.
func (a *App) wireAuthz() error {
	m, err := authz.NewMetrics(a.Registry, a.Config.Service)
	if err != nil {
		return fmt.Errorf("platform: authz metrics: %w", err)
	}
	a.AuthzMetrics = m
	keys, err := authz.NewKeyProvider(
		authz.WithJWKSURL(a.Config.Auth0.JWKSURL),
		authz.WithHTTPClient(a.opts.HTTPClient),
		authz.WithKeyMetrics(m),
	)
	if err != nil {
		return fmt.Errorf("platform: key provider: %w", err)
	}
	a.Keys = keys
	revJS, err := a.OwnerJetStream("KV_" + natsauth.RevocationBucket)
	if err != nil {
		return err
	}
	a.Revocations = natsauth.NewRevocationWatcher(revJS)
	v, err := authz.NewValidator(keys,
		authz.WithIssuers(a.Config.Auth0.Issuer),
		authz.WithAudiences(a.Config.Auth0.Audience),
		authz.WithRevocations(a.Revocations),
		authz.WithMetrics(m),
	)
	if err != nil {
		return fmt.Errorf("platform: validator: %w", err)
	}
	a.Validator = v
	ts, err := natsauth.NewClientCredentials(natsauth.ClientCredentialsConfig{
		TokenURL:     a.Config.Auth0.TokenURL,
		ClientID:     a.Config.ClientID,
		ClientSecret: a.Config.ClientSecret,
		Audience:     a.Config.Auth0.Audience,
		HTTPClient:   a.opts.HTTPClient,
	})
	if err != nil {
		return fmt.Errorf("platform: token source: %w", err)
	}
	a.Tokens = ts

	go func() {
		if err := keys.Start(a.ctx); err != nil && a.ctx.Err() == nil {
			// Not fatal: the provider keeps trying and /readyz says so.
			a.Logger.Warn("signing keys not loaded yet", slog.String("error", err.Error()))
		}
	}()
	go func() {
		if err := a.Revocations.Run(a.ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.Logger.Error("revocation watcher stopped", slog.String("error", err.Error()))
		}
	}()
	return nil
}
