package exchange

import (
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// DPoP-bound subject tokens. A token with cnf.jkt is exchanged only with
// the DPoP proof (RFC 9449) of the live HTTP request the requesting workload
// serves, forwarded in request_details.dpop_proof by the edge that verified
// it (natsauth.TxnRequestDetails). The thumbprint alone proves nothing — it
// is in the token, which the workload holds for hours — while a proof can be
// made only by the key holder and is good for a minute: a workload that saw
// a bound token once cannot keep minting transaction tokens with it.

// Defaults of the proof checks (Config).
const (
	// DefaultProofMaxAge is how old a proof's iat may be: the edge's
	// (authz.DefaultDPoPMaxAge). The exchanges of a request follow the
	// edge's check by milliseconds; a minute leaves room for a slow request.
	DefaultProofMaxAge = authz.DefaultDPoPMaxAge
	// DefaultProofFutureSkew is how far ahead of this service's clock a
	// proof's iat may be: the edge's (authz.DefaultDPoPFutureSkew), so that
	// a client whose clock runs fast, accepted at the edge, is not refused
	// here. It does not lengthen a proof's use for a client with a right
	// clock: that ends MaxAge after iat, i.e. after the request.
	DefaultProofFutureSkew = authz.DefaultDPoPFutureSkew
	// DefaultProofUses bounds the proofs remembered at once (about 150 bytes
	// each): with a minute's window, 1,500 bound requests a second.
	DefaultProofUses = 100_000
	// maxRequestDetailsBytes fits a proof with an RSA-4096 key and the
	// thumbprint.
	maxRequestDetailsBytes = authz.MaxDPoPProofBytes + 1024
)

// dpopRefused is the refusal of a bound subject token without an acceptable
// proof: one shape whatever the check (reason, for logs and metrics, says
// which), never quoting the proof or the token.
func dpopRefused(reason string) *Error {
	return badRequest(reason, "a DPoP-bound subject token needs the current DPoP proof the requesting workload verified for it")
}

// checkProof checks the proof forwarded with the bound subject token (jkt
// its cnf.jkt) by the workload actor: the proof's key is the token's, its
// ath the token's hash, its iat within [now - ProofMaxAge, now +
// ProofFutureSkew]. One proof serves every exchange of its request (orders
// makes two per order, for different scopes) by the workload that first
// forwarded it, and no other workload's, until it is too old anyway.
func (x *Exchanger) checkProof(d natsauth.TxnRequestDetails, subjectToken, jkt, actor string) error {
	if d.DPoPProof == "" {
		return dpopRefused("dpop_unverified")
	}
	if d.DPoPJKT != "" && d.DPoPJKT != jkt {
		return dpopRefused("dpop_unverified")
	}
	p, err := x.proofs.Verify(d.DPoPProof, jkt, subjectToken)
	if err != nil {
		reason := "invalid"
		var ae *authz.Error
		if errors.As(err, &ae) && ae.Reason != "" {
			reason = strings.TrimPrefix(ae.Reason, "dpop_")
		}
		return dpopRefused("dpop_proof_" + reason)
	}
	switch err := x.uses.use(p.JKT, p.JTI, actor, p.IssuedAt.Add(x.proofs.MaxAge()), x.cfg.Now()); {
	case errors.Is(err, errProofOtherWorkload):
		return dpopRefused("dpop_proof_other_workload")
	case err != nil:
		return &Error{Status: 503, Code: "temporarily_unavailable", Reason: "dpop_proof_uses_full",
			Description: "too many DPoP proofs in flight, retry later"}
	}
	return nil
}

var (
	errProofOtherWorkload = errors.New("exchange: the DPoP proof was forwarded by another workload")
	errProofUsesFull      = errors.New("exchange: too many DPoP proofs remembered")
)

// proofUses remembers which workload forwarded each proof (by its key's
// thumbprint and its jti: jtis are unique per key only) until the proof is
// too old to be accepted. It is bounded: when full of live proofs, new ones
// are refused (503, retry), never an entry dropped early, which would let
// another workload use that proof. Each replica has its own (the TTS has no
// shared storage); the iat window bounds a proof's use at any of them.
type proofUses struct {
	max int

	mu      sync.Mutex
	m       map[[sha256.Size]byte]proofUse
	sweepAt time.Time
}

type proofUse struct {
	actor string
	until time.Time
}

// proofSweepEvery is how often, at most, expired entries are dropped.
const proofSweepEvery = time.Second

func newProofUses(size int) *proofUses {
	return &proofUses{max: size, m: make(map[[sha256.Size]byte]proofUse)}
}

// use records that actor forwards the proof (jkt, jti), acceptable until
// until: nil when the proof is new or was first forwarded by actor.
func (u *proofUses) use(jkt, jti, actor string, until, now time.Time) error {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var id [sha256.Size]byte
	h.Sum(id[:0])

	u.mu.Lock()
	defer u.mu.Unlock()
	if !now.Before(u.sweepAt) {
		for k, e := range u.m {
			if !now.Before(e.until) {
				delete(u.m, k)
			}
		}
		u.sweepAt = now.Add(proofSweepEvery)
	}
	if e, ok := u.m[id]; ok && now.Before(e.until) {
		if e.actor != actor {
			return errProofOtherWorkload
		}
		return nil
	}
	if len(u.m) >= u.max {
		return errProofUsesFull
	}
	u.m[id] = proofUse{actor: strings.Clone(actor), until: until}
	return nil
}
