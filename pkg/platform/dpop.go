package platform

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// DPoP configuration, read with the service's prefix (ORDERS_DPOP_MODE...):
//
//	<P>DPOP_MODE             allowed (default), required or disabled
//	<P>DPOP_ORIGIN           the external origin proofs name (https://api.example.com);
//	                         default: the request's own scheme and Host
//	<P>DPOP_TRUST_FORWARDED  true behind a proxy that sets X-Forwarded-Proto/-Host
//	                         (not with DPOP_ORIGIN)
//	<P>DPOP_NONCE_KEY        base64 of ≥ 32 bytes, the same on every replica:
//	                         proofs must then carry a server nonce (5 min)
const dpopNonceLifetime = 5 * time.Minute

// wireDPoP builds the DPoP verifier every route's middleware uses: proofs'
// jtis are claimed in the service's own replay bucket (mesh.DPoPReplayBucket,
// in its own account: each service checks its own requests), created by a
// set-up step; until it exists a DPoP request is answered 503, never
// accepted unchecked. Bearer requests do not wait for it.
func (a *App) wireDPoP() error {
	cfg, err := dpopConfig(a.Config.Prefix, a.Config.Getenv)
	if err != nil {
		return err
	}
	replay := NewLazy[*natsauth.DPoPReplayCache]("DPoP replay bucket")
	cfg.Replay = lazyReplay{replay}
	dp, err := authz.NewDPoP(cfg)
	if err != nil {
		return fmt.Errorf("platform: DPoP: %w", err)
	}
	a.DPoP = dp
	if cfg.Mode == authz.DPoPDisabled {
		return nil
	}
	bucket := mesh.DPoPReplayBucket(a.Config.Service)
	a.SetUp("dpop-replay-bucket", func(ctx context.Context) error {
		kv, err := a.JetStream.CreateOrUpdateKeyValue(ctx, natsauth.DPoPReplayBucket(bucket, dp.ReplayTTL(), a.Config.NATSReplicas))
		if err != nil {
			return fmt.Errorf("bucket %s: %w", bucket, err)
		}
		rc, err := natsauth.NewDPoPReplayCache(kv, dp.ReplayTTL())
		if err != nil {
			return err
		}
		replay.Set(rc)
		return nil
	})
	return nil
}

// dpopConfig reads the <P>DPOP_* variables (getenv adds the prefix; prefix
// names them in errors) into a DPoPConfig without its replay cache: each
// bad value is an error naming its variable and what it accepts.
func dpopConfig(prefix string, getenv func(string) string) (authz.DPoPConfig, error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	cfg := authz.DPoPConfig{Origin: get("DPOP_ORIGIN")}
	switch m := strings.ToLower(get("DPOP_MODE")); m {
	case "", "allowed":
	case "required":
		cfg.Mode = authz.DPoPRequired
	case "disabled":
		cfg.Mode = authz.DPoPDisabled
	default:
		return cfg, fmt.Errorf("platform: %sDPOP_MODE %q: want allowed, required or disabled", prefix, m)
	}
	switch v := strings.ToLower(get("DPOP_TRUST_FORWARDED")); v {
	case "", "false":
	case "true":
		cfg.TrustForwarded = true
	default:
		return cfg, fmt.Errorf("platform: %sDPOP_TRUST_FORWARDED %q: want true or false", prefix, v)
	}
	if cfg.Origin != "" && cfg.TrustForwarded {
		// The origin wins over the forwarded headers: say so rather than
		// let one setting silently do nothing.
		return cfg, fmt.Errorf("platform: %sDPOP_ORIGIN and %sDPOP_TRUST_FORWARDED=true: set one (the origin names the API behind any proxy)", prefix, prefix)
	}
	if cfg.Origin != "" {
		// NewDPoP checks it too; here the error names the variable.
		if _, err := authz.NewDPoP(authz.DPoPConfig{Origin: cfg.Origin, Mode: authz.DPoPDisabled}); err != nil {
			return cfg, fmt.Errorf("platform: %sDPOP_ORIGIN %q: want an absolute http(s) URL without query, such as https://api.example.com", prefix, cfg.Origin)
		}
	}
	if k := get("DPOP_NONCE_KEY"); k != "" {
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return cfg, fmt.Errorf("platform: %sDPOP_NONCE_KEY: not base64: %w", prefix, err)
		}
		if cfg.Nonces, err = authz.NewDPoPNonces(key, dpopNonceLifetime); err != nil {
			return cfg, fmt.Errorf("platform: %sDPOP_NONCE_KEY: %w", prefix, err)
		}
	}
	return cfg, nil
}

// lazyReplay claims in the replay bucket once it exists.
type lazyReplay struct {
	l *Lazy[*natsauth.DPoPReplayCache]
}

func (r lazyReplay) Claim(ctx context.Context, key string, ttl time.Duration) error {
	rc, err := r.l.Get(ctx)
	if err != nil {
		return err
	}
	return rc.Claim(ctx, key, ttl)
}
