package authz

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Failure codes of DPoP (RFC 9449 §7.1, §12.2) and of a request carrying
// its credentials ambiguously (RFC 6750 §3.1).
const (
	// CodeInvalidDPoPProof: the DPoP proof is missing, malformed, badly
	// signed, stale, replayed or for another request (401).
	CodeInvalidDPoPProof Code = "invalid_dpop_proof"
	// CodeUseDPoPNonce: the proof must carry the server nonce sent in the
	// answer's DPoP-Nonce header (401).
	CodeUseDPoPNonce Code = "use_dpop_nonce"
	// CodeInvalidRequest: several Authorization headers (400).
	CodeInvalidRequest Code = "invalid_request"
)

// DPoPChallenge is what an answer says about DPoP: the accepted algorithms,
// which scheme the error belongs to, and a fresh nonce.
type DPoPChallenge struct {
	// Algs is the space-separated list of accepted proof algorithms.
	Algs string
	// Used: the request used the DPoP scheme, or had to (a DPoP-bound token
	// sent as Bearer, Bearer where DPoP is required): the error goes into
	// the DPoP challenge (RFC 9449 §7.2).
	Used bool
	// Bearer: the Bearer scheme is accepted too, so its challenge is offered.
	Bearer bool
	// Both: the error belongs to both challenges (several Authorization
	// headers: RFC 9449 §7.2).
	Both bool
	// Nonce, when set, is sent in DPoP-Nonce.
	Nonce string
}

// challenge adds DPoP's challenge to the Bearer challenge AnswerOf built for
// e, as a WWW-Authenticate field of its own after it (RFC 9110 §11.6.1
// allows one field a challenge; a client reading one value gets the Bearer
// challenge of contract §5 unchanged): `Bearer realm="authmesh"` then
// `DPoP realm="authmesh", algs="ES256 …"` without credentials, the error in
// the challenge of the scheme used. Where Bearer is not accepted, DPoP's is
// the only one.
func (d *DPoPChallenge) challenge(h http.Header) {
	if d.Nonce != "" {
		h.Set(HeaderDPoPNonce, d.Nonce)
	}
	bearer := h.Get(echo.HeaderWWWAuthenticate)
	if bearer == "" {
		return // 503, no_policy: not a matter of credentials
	}
	realm := `Bearer realm="` + DefaultRealm + `"`
	params := strings.TrimPrefix(bearer, realm) // "" or `, error="…", …`
	dpop := `DPoP realm="` + DefaultRealm + `"`
	algs := `, algs="` + quoteSafe(d.Algs) + `"`
	var v []string
	switch {
	case d.Both && d.Bearer:
		v = []string{bearer, dpop + params + algs}
	case d.Used && d.Bearer:
		v = []string{realm, dpop + params + algs}
	case d.Used || !d.Bearer:
		v = []string{dpop + params + algs}
	default:
		v = []string{bearer, dpop + algs}
	}
	h.Del(echo.HeaderWWWAuthenticate)
	for _, c := range v {
		h.Add(echo.HeaderWWWAuthenticate, c)
	}
}
