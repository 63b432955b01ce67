package authz

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// authenticate verifies the credentials of req: "Authorization: Bearer
// <token>", or, unless DPoP is disabled, "Authorization: DPoP <token>" with
// its proof in the DPoP header. The token itself is verified by v either
// way (go-jwt-middleware underneath); DPoP adds the proof and the binding.
// It returns what the request's context carries from then on: the claims,
// the token and, for DPoP, the verified proof and its key's thumbprint.
// required: the route demands DPoP (Policy.RequireDPoP).
func authenticate(req *http.Request, v *Validator, d *DPoP, required bool) (*identity, error) {
	ch := d.challengeFor(required)
	if required && ch == nil {
		// Fail closed: a route that requires DPoP on a service without it.
		return nil, invalid("dpop_unavailable", "this route requires DPoP, which this service does not accept", nil)
	}
	auths := req.Header.Values(echo.HeaderAuthorization)
	if len(auths) > 1 {
		// RFC 9449 §7.2, RFC 6750 §3.1: one set of credentials per request.
		err := withChallenge(&Error{Code: CodeInvalidRequest, Reason: "several_authorizations",
			Description: "send exactly one Authorization header"}, ch, true)
		if e, ok := err.(*Error); ok && e.DPoP != nil {
			e.DPoP.Both = true
		}
		return nil, err
	}
	var scheme, token string
	if len(auths) == 1 {
		scheme, token = splitAuthorization(auths[0])
	}
	ctx := req.Context()
	switch {
	case scheme == "bearer" && token != "":
		if ch != nil && !ch.Bearer {
			return nil, withChallenge(invalid("dpop_required", "this API requires a DPoP-bound token and a DPoP proof", nil), ch, true)
		}
		c, err := v.Validate(ctx, token)
		if err != nil {
			return nil, withChallenge(err, ch, false)
		}
		if c.JKT != "" {
			// RFC 9449 §7.2: a stolen DPoP-bound token must not work as a
			// bearer token. Refused in every mode, disabled included.
			return nil, withChallenge(invalid("dpop_downgrade", "a DPoP-bound token must be sent with the DPoP scheme and a proof", nil), ch, true)
		}
		return &identity{claims: c, token: token}, nil
	case scheme == "dpop" && token != "" && ch != nil:
		c, err := v.Validate(ctx, token)
		if err != nil {
			return nil, withChallenge(err, ch, true)
		}
		if c.JKT == "" {
			return nil, withChallenge(invalid("dpop_unbound", "the token is not DPoP-bound: send it with the Bearer scheme", nil), ch, true)
		}
		proof, err := ProofHeader(req.Header)
		if err != nil {
			return nil, withChallenge(err, ch, true)
		}
		p, err := d.Verify(ctx, proof, ProofCheck{Method: req.Method, URI: d.RequestURI(req), AccessToken: token, Claims: c})
		if err != nil {
			if CodeOf(err) == CodeUseDPoPNonce {
				nch := *ch
				nch.Nonce = d.cfg.Nonces.Issue()
				ch = &nch
			}
			return nil, withChallenge(err, ch, true)
		}
		return &identity{claims: c, token: token, proofJKT: p.JKT, proof: proof}, nil
	}
	return nil, withChallenge(ErrMissingToken, ch, false)
}

// challengeFor is the DPoP challenge of d's answers, nil without DPoP.
func (d *DPoP) challengeFor(required bool) *DPoPChallenge {
	if d == nil || d.cfg.Mode == DPoPDisabled {
		return nil
	}
	return &DPoPChallenge{Algs: d.algsList, Bearer: !required && d.cfg.Mode != DPoPRequired}
}

// withChallenge returns err with ch attached (a copy: sentinels are shared).
func withChallenge(err error, ch *DPoPChallenge, used bool) error {
	e, ok := err.(*Error)
	if !ok || ch == nil {
		return err
	}
	c := *e
	cc := *ch
	cc.Used = used
	c.DPoP = &cc
	return &c
}

// splitAuthorization returns the scheme, in lower case (RFC 9110 §11.1:
// case-insensitive), and the credentials of an Authorization value.
func splitAuthorization(h string) (string, string) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return strings.ToLower(h), ""
	}
	return strings.ToLower(scheme), strings.TrimSpace(rest)
}

// DPoPVerifiedFromContext returns the thumbprint of the DPoP key whose
// proof the Echo middleware verified for this request's token. A DPoP-bound
// token is exchanged for a transaction token only in such a context (natsauth
// asks for it): the proof belongs to this one HTTP request, so downstream
// the transaction token carries the identity, never the bound token.
func DPoPVerifiedFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(identityKey).(*identity)
	if !ok || id.proofJKT == "" || id.claims == nil || id.claims.JKT != id.proofJKT {
		return "", false
	}
	return id.proofJKT, true
}
