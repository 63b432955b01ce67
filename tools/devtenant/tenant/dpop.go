package tenant

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/authmesh/authmesh/pkg/authz"
)

// DPoP at the token endpoint (RFC 9449 §5, §8; Auth0's "Token
// Sender-Constraining"). An API opts in with the Deploy CLI's
// proof_of_possession: {mechanism: dpop, required: bool, required_for:
// all_clients|public_clients}. A token request may carry a proof (htm POST,
// htu the token endpoint), verified with pkg/authz's verifier; for an API
// that opted in, the access token then carries cnf.jkt and token_type is
// DPoP, and a public client's refresh token is bound to the key. As at
// Auth0, an API without the setting issues an unbound Bearer token even to a
// client that sent a proof.

// PoP is an API's proof_of_possession setting (dpop only).
type PoP struct {
	// Required refuses token requests without a proof, from every client
	// or, with PublicOnly (required_for: public_clients), from public ones.
	Required   bool
	PublicOnly bool
}

// popYAML is proof_of_possession in the Deploy CLI format.
type popYAML struct {
	Mechanism   string `yaml:"mechanism"`
	Required    bool   `yaml:"required"`
	RequiredFor string `yaml:"required_for"`
}

// parsePoP validates an API's proof_of_possession; nil means none.
func parsePoP(p *popYAML) (*PoP, error) {
	if p == nil {
		return nil, nil
	}
	if p.Mechanism != "dpop" {
		return nil, fmt.Errorf("proof_of_possession.mechanism %q; fix: use dpop (devtenant does not emulate mtls)", p.Mechanism)
	}
	pop := &PoP{Required: p.Required}
	switch p.RequiredFor {
	case "", "all_clients":
	case "public_clients":
		pop.PublicOnly = true
	default:
		return nil, fmt.Errorf("proof_of_possession.required_for %q; fix: use all_clients or public_clients", p.RequiredFor)
	}
	return pop, nil
}

// DPoPRequired reports whether a token request of client clientID for the
// API audience is refused without a DPoP proof (its proof_of_possession
// requires one from every client, or from public ones and the client is
// public). Unknown APIs and clients require none.
func (s *Server) DPoPRequired(audience, clientID string) bool {
	api, c := s.model.APIs[audience], s.model.Clients[clientID]
	return api != nil && c != nil && api.PoP != nil && api.PoP.Required && (!api.PoP.PublicOnly || c.Public)
}

// tokenDPoP verifies token requests' proofs. devtenant is one process, so
// its jti cache is in memory (the services' is shared through NATS KV).
type tokenDPoP struct {
	plain, withNonce *authz.DPoP
	nonces           *authz.DPoPNonces
}

func newTokenDPoP(requireNonces bool) (*tokenDPoP, error) {
	replay := authz.NewMemoryReplayCache()
	t := &tokenDPoP{}
	var err error
	if t.plain, err = authz.NewDPoP(authz.DPoPConfig{Replay: replay}); err != nil {
		return nil, err
	}
	if !requireNonces {
		return t, nil
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if t.nonces, err = authz.NewDPoPNonces(key, authz.DefaultDPoPMaxAge*5); err != nil {
		return nil, err
	}
	t.withNonce, err = authz.NewDPoP(authz.DPoPConfig{Replay: replay, Nonces: t.nonces})
	return t, err
}

// errDPoP is Auth0's answer to a bad proof.
func errDPoP(desc string) *oauthErr {
	return &oauthErr{http.StatusBadRequest, "invalid_dpop_proof", desc}
}

// tokenProof verifies the request's DPoP proof, if any, and returns its
// key's thumbprint ("" without a proof). Public clients must use a server
// nonce when the tenant asks for them (Auth0's behaviour): the first try is
// answered 400 use_dpop_nonce with the nonce in DPoP-Nonce.
func (s *Server) tokenProof(w http.ResponseWriter, r *http.Request, p params) (string, *oauthErr) {
	if len(r.Header.Values(authz.HeaderDPoP)) == 0 {
		return "", nil
	}
	proof, err := authz.ProofHeader(r.Header)
	if err != nil {
		return "", errDPoP("Only one DPoP proof is allowed")
	}
	v := s.dpop.plain
	if c := s.requestClient(r, p); c != nil && c.Public && s.dpop.withNonce != nil {
		v = s.dpop.withNonce
	}
	pr, err := v.Verify(r.Context(), proof, authz.ProofCheck{Method: http.MethodPost, URI: v.RequestURI(r)})
	if err != nil {
		var ae *authz.Error
		if authz.CodeOf(err) == authz.CodeUseDPoPNonce {
			w.Header().Set(authz.HeaderDPoPNonce, s.dpop.nonces.Issue())
			return "", &oauthErr{http.StatusBadRequest, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof"}
		}
		desc := "Invalid DPoP proof"
		if asAuthz(err, &ae) && ae.Description != "" {
			desc = ae.Description
		}
		return "", errDPoP(desc)
	}
	note(r, "dpop_jkt", pr.JKT)
	return pr.JKT, nil
}

// requestClient is the client a token request names, in the body or in
// HTTP Basic (authenticated by the grant, not here).
func (s *Server) requestClient(r *http.Request, p params) *Client {
	id := p.get("client_id")
	if bu, _, ok := r.BasicAuth(); ok {
		if du, err := url.QueryUnescape(bu); err == nil {
			id = du
		}
	}
	return s.model.Clients[id]
}

func asAuthz(err error, target **authz.Error) bool {
	e, ok := err.(*authz.Error)
	if ok {
		*target = e
	}
	return ok
}

// refreshBinding refuses, before the refresh token is used up, a refresh
// of a key-bound token without a proof by that key (RFC 9449 §5: a public
// client's refresh tokens are bound).
func (s *Server) refreshBinding(p params, jkt string) *oauthErr {
	rec, _ := s.store.peekRefresh(p.get("refresh_token"))
	return requireProof(rec.jkt, jkt,
		"The refresh token is bound to a DPoP key: a DPoP proof by that key is required",
		"The DPoP proof key does not match the refresh token's binding")
}

// codeBinding refuses, before the code is used up, to redeem a code whose
// authorization request named a DPoP key (dpop_jkt, RFC 9449 §10) without
// a proof by that key: whoever else got hold of the code (and its PKCE
// verifier) cannot have tokens bound to a key of their own.
func (s *Server) codeBinding(p params, jkt string) *oauthErr {
	bound, _ := s.store.codeJKT(p.get("code"))
	return requireProof(bound, jkt,
		"The authorization code is bound to a DPoP key (dpop_jkt): a DPoP proof by that key is required",
		"The DPoP proof key does not match the dpop_jkt of the authorization request")
}

// requireProof refuses a proof by a key other than bound, or none, when
// bound is not "": missing and mismatch say which.
func requireProof(bound, jkt, missing, mismatch string) *oauthErr {
	switch {
	case bound == "":
		return nil
	case jkt == "":
		return errDPoP(missing)
	case jkt != bound:
		return errDPoP(mismatch)
	}
	return nil
}

// validJKT: a SHA-256 thumbprint, base64url without padding.
func validJKT(jkt string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(jkt)
	return err == nil && len(b) == sha256.Size
}

// bindDPoP turns an issued response into a DPoP-bound one when the token's
// API opted in and a proof came (cnf.jkt, token_type DPoP, the public
// client's refresh token bound), refuses it when the API requires a proof
// that did not come, and leaves it as it is otherwise. Binding happens after
// issuance, so that the grant handlers stay the same for both schemes: the
// access token is re-signed with cnf added to its claims, under the same
// header type.
func (s *Server) bindDPoP(c *Client, resp *tokenResponse, jkt string) (*tokenResponse, *oauthErr) {
	if c == nil {
		return nil, &oauthErr{http.StatusUnauthorized, "invalid_client", "Unknown client"}
	}
	api, claims, typ, err := s.accessTokenAPI(resp.AccessToken)
	if err != nil {
		return nil, errSign
	}
	if api == nil || api.PoP == nil {
		return resp, nil // no policy: an unbound Bearer token, as at Auth0
	}
	if jkt == "" {
		if api.PoP.Required && (!api.PoP.PublicOnly || c.Public) {
			if resp.RefreshToken != "" {
				s.store.revokeRefresh(resp.RefreshToken, c.ID)
			}
			return nil, &oauthErr{http.StatusBadRequest, "invalid_request", "DPoP proof is required for this API"}
		}
		return resp, nil
	}
	claims["cnf"] = map[string]string{"jkt": jkt}
	at, err := s.keys.signTyped(typ, claims)
	if err != nil {
		s.log.Error("dpop: sign", "error", err.Error())
		return nil, errSign
	}
	out := *resp
	out.AccessToken, out.TokenType = at, "DPoP"
	if resp.RefreshToken != "" && c.Public {
		s.store.bindRefresh(resp.RefreshToken, jkt)
	}
	return &out, nil
}

// accessTokenAPI reads back a token devtenant just signed: its API (by
// aud, a string or a list), its claims and its header's typ.
func (s *Server) accessTokenAPI(at string) (*API, map[string]any, string, error) {
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		return nil, nil, "", fmt.Errorf("not a JWS")
	}
	var hdr struct {
		Typ string `json:"typ"`
	}
	var claims map[string]any
	for i, dst := range []any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, "", err
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber() // iat and exp stay integers
		if err := d.Decode(dst); err != nil {
			return nil, nil, "", err
		}
	}
	for k, v := range claims {
		claims[k] = plainNumbers(v)
	}
	var auds []any
	switch a := claims["aud"].(type) {
	case string:
		auds = []any{a}
	case []any:
		auds = a
	}
	for _, a := range auds {
		if id, ok := a.(string); ok && s.model.APIs[id] != nil {
			return s.model.APIs[id], claims, hdr.Typ, nil
		}
	}
	return nil, claims, hdr.Typ, nil
}

// plainNumbers turns json.Numbers back into int64 (or float64): go-jose's
// own JSON encoder would write them as strings, and a NumericDate must be a
// number.
func plainNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = plainNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = plainNumbers(e)
		}
	}
	return v
}

// codeJKT is the dpop_jkt a live code was bound to at /authorize.
func (st *store) codeJKT(code string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c, ok := st.codes[digest(code)]
	if !ok {
		return "", false
	}
	return c.jkt, true
}

// bindRefresh binds a refresh token to a DPoP key.
func (st *store) bindRefresh(tok, jkt string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r, ok := st.refresh[digest(tok)]; ok {
		r.jkt = jkt
	}
}
