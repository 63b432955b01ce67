package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
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
	v, err := authz.NewValidator(keys, a.validatorOptions(m, a.Config.Auth0.Issuers, a.Config.Auth0.Audience)...)
	if err != nil {
		return fmt.Errorf("platform: validator: %w", err)
	}
	a.Validator = v
	if !a.opts.TokenService {
		if err := a.wireTxn(m); err != nil {
			return err
		}
		if err := a.wireDPoP(); err != nil {
			return err
		}
	}

	a.startKeys(keys, "signing keys not loaded yet")
	go func() {
		if err := a.Revocations.Run(a.ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.Logger.Error("revocation watcher stopped", slog.String("error", err.Error()))
		}
	}()
	return nil
}

// validatorOptions are the access-token and the transaction-token
// validators' options: each accepts its own issuers and audience, and both
// hold tokens against the same revocations and count into the same metrics.
func (a *App) validatorOptions(m *authz.Metrics, issuers []string, audience string) []authz.Option {
	return []authz.Option{
		authz.WithIssuers(issuers...),
		authz.WithAudiences(audience),
		authz.WithRevocations(a.Revocations),
		authz.WithMetrics(m),
	}
}

// wireTxn builds what a service needs for transaction tokens: the validator
// its NATS receivers verify them with (keys from the Transaction Token
// Service's JWKS, kept DefaultRetainRotated after a rotation so queued
// events stay verifiable), and the outbound exchange every context of the
// app carries (WithOutbound), so NATS messages sent on a caller's behalf get
// a transaction token narrowed to their hop (mesh.Hops).
func (a *App) wireTxn(m *authz.Metrics) error {
	keys, err := authz.NewKeyProvider(
		authz.WithJWKSURL(a.Config.Txn.JWKSURL),
		authz.WithAlgorithm("ES256"),
		authz.WithHTTPClient(a.opts.HTTPClient),
		// The service's keys change only by rotation, which publishes the
		// next key ahead of use; a short cool-down lets a replica that missed
		// it catch up quickly.
		authz.WithRefetchCooldown(5*time.Second),
	)
	if err != nil {
		return fmt.Errorf("platform: transaction token keys: %w", err)
	}
	tv, err := authz.NewTxnValidator(keys, a.validatorOptions(m, []string{a.Config.Txn.Issuer}, a.Config.Txn.TrustDomain)...)
	if err != nil {
		return fmt.Errorf("platform: transaction token validator: %w", err)
	}
	tc, err := natsauth.NewTxnClient(natsauth.TxnClientConfig{
		Conn: a.NATS, Actor: a.Tokens, TrustDomain: a.Config.Txn.TrustDomain,
	})
	if err != nil {
		return fmt.Errorf("platform: transaction token client: %w", err)
	}
	a.TxnKeys, a.TxnValidator, a.TxnClient = keys, tv, tc
	a.outbound = &natsauth.Outbound{Exchanger: tc, Scopes: mesh.HopScopes}
	a.ctx = natsauth.WithOutbound(a.ctx, a.outbound)
	a.startKeys(keys, "transaction token keys not loaded yet")
	return nil
}

// startKeys loads keys in the background on the app's context. A failure is
// not fatal: the provider keeps trying and /readyz says so.
func (a *App) startKeys(keys *authz.KeyProvider, notYet string) {
	go func() {
		if err := keys.Start(a.ctx); err != nil && a.ctx.Err() == nil {
			a.Logger.Warn(notYet, slog.String("error", err.Error()))
		}
	}()
}
