package authz

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// DPoP (RFC 9449): sender-constrained access tokens. A client proves on
// every request that it holds the private key whose thumbprint the access
// token carries (cnf.jkt), by sending a fresh proof — a JWS signed with that
// key over the method, the URI, the time and the token's hash — in the DPoP
// header. A stolen token is useless without the key; a captured proof is
// useless twice, because every replica claims its jti in one shared replay
// cache (go-jwt-middleware v3 keeps none), and, optionally, because it must
// carry a server nonce.
//
// The work is split by job: this file configures it, dpop_jws.go reads a
// proof's header and key and checks its signature, dpop_claims.go checks its
// claims and claims its jti, dpop_htu.go says which URI a proof must name.

// DPoPMode says whether an API accepts DPoP-bound tokens.
type DPoPMode int

const (
	// DPoPAllowed (the default) accepts Bearer tokens and DPoP-bound tokens
	// with their proofs; a DPoP-bound token presented as Bearer is refused.
	DPoPAllowed DPoPMode = iota
	// DPoPRequired accepts only DPoP-bound tokens with their proofs (also
	// per route: Policy.RequireDPoP).
	DPoPRequired
	// DPoPDisabled does not offer DPoP: the DPoP scheme counts as no token.
	// DPoP-bound tokens are refused as Bearer all the same: accepting one
	// would throw its binding away.
	DPoPDisabled
)

// Defaults of DPoP proof verification.
const (
	// DefaultDPoPMaxAge is how old a proof's iat may be (RFC 9449 §11.1:
	// "seconds to minutes"); with DefaultDPoPFutureSkew it is the window a
	// jti is remembered for.
	DefaultDPoPMaxAge = 60 * time.Second
	// DefaultDPoPFutureSkew is how far ahead of the server's clock a proof's
	// iat may be (a client clock running fast).
	DefaultDPoPFutureSkew = 30 * time.Second
	// MaxDPoPProofBytes bounds the proofs we parse: an RSA-4096 key in the
	// header makes a proof of about 1.5 KiB.
	MaxDPoPProofBytes = 8 << 10
	// maxJTIBytes bounds a jti (RFC 9449 §11.1: refuse oversized ones);
	// clients send 96 random bits or a UUID.
	maxJTIBytes = 256
	// HeaderDPoP is the proof's request header; HeaderDPoPNonce the server
	// nonce's response header.
	HeaderDPoP      = "DPoP"
	HeaderDPoPNonce = "DPoP-Nonce"
)

// DefaultDPoPAlgorithms are the proof algorithms accepted by default: every
// asymmetric JWS algorithm of RFC 7518 and RFC 8037 (Ed25519). MACs and none are never
// accepted (a proof's key must be public).
var DefaultDPoPAlgorithms = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}

// DPoPConfig configures DPoP proof verification. The zero value, with a
// ReplayCache, is DPoPAllowed with the defaults above.
type DPoPConfig struct {
	Mode DPoPMode
	// Algorithms accepted for proofs (default DefaultDPoPAlgorithms);
	// symmetric algorithms and none are refused by NewDPoP.
	Algorithms []string
	// Origin is the API's external origin ("https://api.example.com", with
	// an optional path prefix a proxy strips), which htu must name. Empty:
	// the request's own scheme and Host.
	Origin string
	// TrustForwarded takes scheme and host from X-Forwarded-Proto and
	// X-Forwarded-Host when Origin is empty: only behind a proxy that sets
	// them, else any client chooses the URI its proof is checked against.
	TrustForwarded bool
	// MaxAge and FutureSkew bound a proof's iat (defaults above).
	MaxAge, FutureSkew time.Duration
	// Replay remembers every accepted jti for ReplayTTL. Required unless the
	// mode is DPoPDisabled; share it between replicas (natsauth's KV cache),
	// or a proof captured at one replica replays at the others.
	Replay ReplayCache
	// Nonces, when set, requires proofs to carry a current server nonce
	// (RFC 9449 §9): a proof without one is answered 401 use_dpop_nonce
	// with a fresh nonce in DPoP-Nonce.
	Nonces *DPoPNonces
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DPoP verifies DPoP proofs. Safe for concurrent use.
type DPoP struct {
	cfg DPoPConfig
	// algsList is the algs challenge parameter.
	algsList string
	origin   *url.URL
	keys     proofKeyCache
}

// NewDPoP validates cfg and fills in its defaults.
//
//	dp, err := authz.NewDPoP(authz.DPoPConfig{
//		Origin: "https://api.example.com",
//		Replay: natsauth.NewDPoPReplayCache(kv), // a bucket with TTL dp.ReplayTTL()
//	})
func NewDPoP(cfg DPoPConfig) (*DPoP, error) {
	if cfg.Mode < DPoPAllowed || cfg.Mode > DPoPDisabled {
		return nil, fmt.Errorf("authz: unknown DPoP mode %d", cfg.Mode)
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultDPoPAlgorithms
	}
	d := &DPoP{cfg: cfg, keys: proofKeyCache{m: make(map[string]*proofKey)}}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(DefaultDPoPAlgorithms, a) {
			return nil, fmt.Errorf("authz: DPoP algorithm %q: want an asymmetric JWS algorithm (%s)", a, strings.Join(DefaultDPoPAlgorithms, " "))
		}
	}
	d.cfg.Algorithms = slices.Clone(cfg.Algorithms)
	d.algsList = strings.Join(cfg.Algorithms, " ")
	if cfg.MaxAge == 0 {
		d.cfg.MaxAge = DefaultDPoPMaxAge
	}
	if cfg.FutureSkew == 0 {
		d.cfg.FutureSkew = DefaultDPoPFutureSkew
	}
	if d.cfg.MaxAge < 0 || d.cfg.MaxAge > 10*time.Minute || d.cfg.FutureSkew < 0 || d.cfg.FutureSkew > 5*time.Minute {
		return nil, errors.New("authz: DPoP MaxAge must be within (0, 10m] and FutureSkew within [0, 5m]")
	}
	if cfg.Origin != "" {
		u, err := url.Parse(cfg.Origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("authz: DPoP origin %q: want an absolute http(s) URL without query", cfg.Origin)
		}
		d.origin = u
	}
	if cfg.Replay == nil && cfg.Mode != DPoPDisabled {
		return nil, errors.New("authz: DPoP needs a replay cache (natsauth.NewDPoPReplayCache)")
	}
	if d.cfg.Now == nil {
		d.cfg.Now = time.Now
	}
	return d, nil
}

// Mode returns the configured mode.
func (d *DPoP) Mode() DPoPMode { return d.cfg.Mode }

// Algorithms returns the accepted proof algorithms (the algs of challenges
// and of dpop_signing_alg_values_supported).
func (d *DPoP) Algorithms() []string { return slices.Clone(d.cfg.Algorithms) }

// ReplayTTL is how long a jti must be remembered: a proof stays acceptable
// from FutureSkew before its iat until MaxAge after it. A shared replay
// bucket's TTL must be at least this.
func (d *DPoP) ReplayTTL() time.Duration { return d.cfg.MaxAge + d.cfg.FutureSkew }
