package authz

import (
	"context"
	"errors"
	"time"
)

// Forwarded DPoP proofs. A DPoP-bound token's cnf.jkt is readable from the
// token itself, so a service's word that "the edge verified a proof by this
// key" proves nothing: a compromised service that once saw a bound token
// could repeat that word for the token's whole lifetime. Instead, the edge
// that verified a request's proof (the Echo middleware) keeps the proof
// itself in the request's context (DPoPProofFromContext), natsauth forwards
// it in a token exchange's request_details, and the Transaction Token
// Service checks it with a ForwardedProofVerifier: signed by the key the
// token is bound to, for this very token (ath), and minutes-fresh (iat). Only
// the key holder can make one, and only while a live request is under way.

// DPoPProofFromContext returns the DPoP proof (the compact JWS of the DPoP
// header) that the Echo middleware verified for this request's token, when
// DPoPVerifiedFromContext holds too. It is forwarded to the Transaction Token
// Service with the exchange of a DPoP-bound token (natsauth), which checks it
// with ForwardedProofVerifier. Like the token, never log it.
func DPoPProofFromContext(ctx context.Context) (string, bool) {
	if _, ok := DPoPVerifiedFromContext(ctx); !ok {
		return "", false
	}
	id := ctx.Value(identityKey).(*identity)
	return id.proof, id.proof != ""
}

// ForwardedProofConfig configures a ForwardedProofVerifier.
type ForwardedProofConfig struct {
	// Algorithms accepted (default DefaultDPoPAlgorithms; asymmetric only).
	Algorithms []string
	// MaxAge and FutureSkew bound the proof's iat against Now (defaults
	// DefaultDPoPMaxAge and DefaultDPoPFutureSkew, the edge's: a proof the
	// edge accepted is accepted here while its request is under way).
	MaxAge, FutureSkew time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ForwardedProofVerifier checks DPoP proofs forwarded by the edge that
// verified them. Safe for concurrent use.
type ForwardedProofVerifier struct{ d *DPoP }

// NewForwardedProofVerifier validates cfg (as NewDPoP does) and fills in its
// defaults.
func NewForwardedProofVerifier(cfg ForwardedProofConfig) (*ForwardedProofVerifier, error) {
	// DPoPDisabled: no replay cache, no challenges; only the proof checks.
	d, err := NewDPoP(DPoPConfig{Mode: DPoPDisabled, Algorithms: cfg.Algorithms,
		MaxAge: cfg.MaxAge, FutureSkew: cfg.FutureSkew, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	return &ForwardedProofVerifier{d: d}, nil
}

// Window is how long a proof stays acceptable around its iat (MaxAge +
// FutureSkew): what a caller keeping a proof's jti must keep it for.
func (v *ForwardedProofVerifier) Window() time.Duration { return v.d.ReplayTTL() }

// MaxAge is how old a proof's iat may be.
func (v *ForwardedProofVerifier) MaxAge() time.Duration { return v.d.cfg.MaxAge }

// Verify checks that proof is a DPoP proof (typ dpop+jwt, no crit, an
// accepted asymmetric alg, a public jwk fitting it) signed by that jwk, whose
// RFC 7638 thumbprint is jkt (the access token's cnf.jkt), whose ath is the
// SHA-256 of accessToken, with a jti, htm, htu and an iat within the window.
// It returns the proof's thumbprint, jti and iat.
//
// htm and htu are not compared (the edge compared them with its request;
// the receiver has none), no server nonce is asked for, and no jti is
// claimed: what a second use of the proof means is the caller's rule.
// Errors are *Error, CodeInvalidDPoPProof or CodeInvalidToken (ath, key
// binding) with a Reason; they never quote the proof or the token.
func (v *ForwardedProofVerifier) Verify(proof, jkt, accessToken string) (*Proof, error) {
	p, err := v.d.checkForwarded(proof, jkt, accessToken, v.d.cfg.Now())
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// errNoBinding: Verify called without the token or its thumbprint.
var errNoBinding = errors.New("authz: a forwarded DPoP proof is checked against a bound token and its cnf.jkt")

// checkForwarded is check (dpop_claims.go) for a forwarded proof: htm and
// htu must be there but name the edge's request, and no nonce applies.
func (d *DPoP) checkForwarded(proof, jkt, accessToken string, now time.Time) (Proof, error) {
	if jkt == "" || accessToken == "" {
		return Proof{}, invalid("dpop_binding", "Invalid DPoP key binding", errNoBinding)
	}
	return d.check(proof, ProofCheck{AccessToken: accessToken, JKT: jkt, forwarded: true}, now)
}
