package authz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	fastjson "github.com/segmentio/encoding/json"
)

// DPoP (RFC 9449): sender-constrained access tokens. A client proves on
// every request that it holds the private key whose thumbprint the access
// token carries (cnf.jkt), by sending a fresh proof — a JWS signed with that
// key over the method, the URI, the time and the token's hash — in the DPoP
// header. A stolen token is useless without the key; a captured proof is
// useless twice, because every replica claims its jti in one shared replay
// cache (go-jwt-middleware v3 keeps none), and, optionally, because it must
// carry a server nonce.

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
// asymmetric JWS algorithm go-jose verifies. MACs and none are never
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
	cfg  DPoPConfig
	algs []jose.SignatureAlgorithm
	// algsList is the algs challenge parameter.
	algsList string
	origin   *url.URL

	mu      sync.RWMutex
	headers map[string]*proofHeaderKey // checked protected headers, by encoded form
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
	d := &DPoP{cfg: cfg, headers: make(map[string]*proofHeaderKey)}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(DefaultDPoPAlgorithms, a) {
			return nil, fmt.Errorf("authz: DPoP algorithm %q: want an asymmetric JWS algorithm (%s)", a, strings.Join(DefaultDPoPAlgorithms, " "))
		}
		d.algs = append(d.algs, jose.SignatureAlgorithm(a))
	}
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

// ProofCheck is what a proof is checked against.
type ProofCheck struct {
	// Method and URI of the request (htm, htu). URI is absolute; its query
	// and fragment are ignored.
	Method, URI string
	// AccessToken, when set, must be the proof's ath (at a resource server);
	// empty at a token endpoint, where a proof has no ath.
	AccessToken string
	// JKT, when set, must be the thumbprint of the proof's key (the access
	// token's cnf.jkt, or the key a refresh token is bound to).
	JKT string
	// Nonce, when set, must be the proof's nonce exactly: a nonce the
	// checker handed out for this one exchange (the NATS server's INFO
	// nonce at CONNECT), instead of DPoPConfig.Nonces.
	Nonce string
}

// Proof is a verified proof.
type Proof struct {
	JKT      string // RFC 7638 SHA-256 thumbprint of its key, base64url
	JTI      string
	IssuedAt time.Time
}

// proofClaims are a proof's payload.
type proofClaims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	ATH   *string  `json:"ath"`
	Nonce *string  `json:"nonce"`
}

// proofHeader is what we read of a proof's protected header besides what
// go-jose parses: typ, and the jwk's private members, whose presence alone
// refuses the proof (a client that sends its private key has lost it).
type proofHeader struct {
	Typ string `json:"typ"`
	JWK *struct {
		D  json.RawMessage `json:"d"`
		P  json.RawMessage `json:"p"`
		Q  json.RawMessage `json:"q"`
		DP json.RawMessage `json:"dp"`
		DQ json.RawMessage `json:"dq"`
		QI json.RawMessage `json:"qi"`
		K  json.RawMessage `json:"k"`
	} `json:"jwk"`
	Crit json.RawMessage `json:"crit"`
}

func badProof(reason, description string, cause error) *Error {
	return &Error{Code: CodeInvalidDPoPProof, Reason: reason, Description: description, Err: cause}
}

// ProofHeader returns the one DPoP proof of h, or an invalid_dpop_proof
// error when there is none or more than one (RFC 9449 §4.3: several DPoP
// headers, or one holding a comma-joined list, fail).
func ProofHeader(h http.Header) (string, error) {
	vs := h.Values(HeaderDPoP)
	switch {
	case len(vs) == 0:
		return "", badProof("missing_proof", "a DPoP proof is required", nil)
	case len(vs) > 1:
		return "", badProof("several_proofs", "exactly one DPoP proof is allowed", nil)
	}
	return strings.TrimSpace(vs[0]), nil
}

// Verify checks proof against chk and claims its jti in the replay cache.
// Errors are *Error: CodeInvalidDPoPProof (Reason says which check),
// CodeInvalidToken when the proof does not match the token (ath, key
// binding), CodeUseDPoPNonce when a nonce is needed (the answer carries a
// fresh one), CodeKeysUnavailable when the replay cache does not answer
// (never accepted unchecked).
func (d *DPoP) Verify(ctx context.Context, proof string, chk ProofCheck) (*Proof, error) {
	p, jti, err := d.parse(proof, chk)
	if err != nil {
		return nil, err
	}
	// Last, so that a proof failing any other check does not use up its jti.
	// The key includes the thumbprint: jtis are only unique per client.
	key := replayKey(p.JKT, jti)
	if err := d.cfg.Replay.Claim(ctx, key, d.ReplayTTL()); err != nil {
		if errors.Is(err, ErrReplayed) {
			return nil, badProof("replayed", "the DPoP proof has been used before", err)
		}
		return nil, &Error{Code: CodeKeysUnavailable, Reason: "replay_cache_unavailable",
			Description: "DPoP replay protection is temporarily unavailable; retry later", Err: err}
	}
	return p, nil
}

// replayKey is a KV-safe key: hex of SHA-256 over thumbprint and jti (a jti
// is any string, and an oversized one must not cost storage).
func replayKey(jkt, jti string) string {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	return hex.EncodeToString(h.Sum(nil))
}

// parse does every check but the replay claim.
func (d *DPoP) parse(proof string, chk ProofCheck) (*Proof, string, error) {
	if proof == "" {
		return nil, "", badProof("missing_proof", "a DPoP proof is required", nil)
	}
	if len(proof) > MaxDPoPProofBytes {
		return nil, "", badProof("too_large", "the DPoP proof is too large", nil)
	}
	if strings.Count(proof, ".") != 2 {
		return nil, "", badProof("malformed", "the DPoP proof is not a compact JWS", nil)
	}
	first, last := strings.IndexByte(proof, '.'), strings.LastIndexByte(proof, '.')
	hk, err := d.proofKey(proof, proof[:first])
	if err != nil {
		return nil, "", err
	}
	payload, err := base64.RawURLEncoding.DecodeString(proof[first+1 : last])
	if err != nil {
		return nil, "", badProof("malformed", "the DPoP proof payload is not base64url", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(proof[last+1:])
	if err != nil || !verifyJWS(hk.alg, hk.key, []byte(proof[:last]), sig) {
		return nil, "", badProof("bad_signature", "the DPoP proof's signature is invalid", err)
	}
	var pc proofClaims
	// segmentio/encoding/json, as for access tokens' claims (claims_decode.go):
	// only a payload whose signature verified gets here.
	if err := fastjson.Unmarshal(payload, &pc); err != nil {
		return nil, "", badProof("malformed", "the DPoP proof's claims are not a JSON object of the right types", err)
	}
	switch {
	case pc.JTI == "":
		return nil, "", badProof("no_jti", "the DPoP proof has no jti", nil)
	case len(pc.JTI) > maxJTIBytes:
		return nil, "", badProof("jti_too_long", "the DPoP proof's jti is too long", nil)
	case pc.HTM == "" || pc.HTU == "" || pc.IAT == nil:
		return nil, "", badProof("missing_claim", "the DPoP proof needs htm, htu and iat", nil)
	case pc.HTM != chk.Method:
		return nil, "", badProof("htm", "the DPoP proof is for another method", nil)
	}
	if !sameHTU(pc.HTU, chk.URI) {
		return nil, "", badProof("htu", "the DPoP proof is for another URI", nil)
	}
	now := d.cfg.Now()
	iat := time.Unix(int64(*pc.IAT), 0)
	if iat.Before(now.Add(-d.cfg.MaxAge)) {
		return nil, "", badProof("stale", "the DPoP proof is too old", nil)
	}
	if iat.After(now.Add(d.cfg.FutureSkew)) {
		return nil, "", badProof("future", "the DPoP proof is issued in the future", nil)
	}
	if chk.AccessToken != "" {
		if pc.ATH == nil {
			return nil, "", badProof("no_ath", "the DPoP proof has no ath", nil)
		}
		sum := sha256.Sum256([]byte(chk.AccessToken))
		want := base64.RawURLEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(*pc.ATH), []byte(want)) != 1 {
			return nil, "", invalid("dpop_ath", "the DPoP proof is not for this access token", nil)
		}
	}
	if chk.JKT != "" && subtle.ConstantTimeCompare([]byte(hk.jkt), []byte(chk.JKT)) != 1 {
		return nil, "", invalid("dpop_binding", "Invalid DPoP key binding", nil)
	}
	if chk.Nonce != "" {
		if pc.Nonce == nil || subtle.ConstantTimeCompare([]byte(*pc.Nonce), []byte(chk.Nonce)) != 1 {
			return nil, "", badProof("nonce", "the DPoP proof does not carry this exchange's nonce", nil)
		}
	} else if n := d.cfg.Nonces; n != nil {
		if pc.Nonce == nil || !n.valid(*pc.Nonce, now) {
			return nil, "", &Error{Code: CodeUseDPoPNonce, Reason: "nonce", Description: "a current server nonce is required in the DPoP proof"}
		}
	}
	return &Proof{JKT: hk.jkt, JTI: pc.JTI, IssuedAt: iat}, pc.JTI, nil
}

// proofHeaderKey is what a proof's protected header yields once checked:
// the algorithm, the public key and its thumbprint.
type proofHeaderKey struct {
	alg jose.SignatureAlgorithm
	key any
	jkt string
}

// maxProofHeaders bounds the cache of checked headers: one per client key.
const maxProofHeaders = 4096

// proofKey checks the protected header hdrB64 of proof — typ, no crit, an
// accepted alg, a public jwk fitting it, via go-jose (whose verification of
// this first proof is discarded: verifyJWS redoes it) — and remembers the
// result by the header's encoded form. A client signs every proof under the
// same header, so after its first proof the header costs a map lookup, not
// a JSON parse, a curve-point check and a thumbprint.
func (d *DPoP) proofKey(proof, hdrB64 string) (*proofHeaderKey, error) {
	d.mu.RLock()
	hk, ok := d.headers[hdrB64]
	d.mu.RUnlock()
	if ok {
		return hk, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(hdrB64)
	if err != nil {
		return nil, badProof("malformed", "the DPoP proof header is not base64url", err)
	}
	var ph proofHeader
	if err := json.Unmarshal(raw, &ph); err != nil {
		return nil, badProof("malformed", "the DPoP proof header is not JSON", err)
	}
	if !isDPoPType(ph.Typ) {
		return nil, badProof("typ", "the DPoP proof's typ must be dpop+jwt", nil)
	}
	if ph.Crit != nil {
		return nil, badProof("crit", "the DPoP proof has critical header parameters", nil)
	}
	if ph.JWK == nil {
		return nil, badProof("no_jwk", "the DPoP proof has no jwk", nil)
	}
	if j := ph.JWK; j.D != nil || j.P != nil || j.Q != nil || j.DP != nil || j.DQ != nil || j.QI != nil || j.K != nil {
		return nil, badProof("private_jwk", "the DPoP proof's jwk must be a public key", nil)
	}
	jws, err := jose.ParseSignedCompact(proof, d.algs)
	if err != nil {
		return nil, badProof("alg", "the DPoP proof is not signed with an accepted algorithm", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, badProof("malformed", "the DPoP proof must have one signature", nil)
	}
	sh := jws.Signatures[0].Protected
	jwk := sh.JSONWebKey
	if jwk == nil || !jwk.Valid() || !jwk.IsPublic() {
		return nil, badProof("bad_jwk", "the DPoP proof's jwk is not a usable public key", nil)
	}
	if rk, ok := jwk.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
		return nil, badProof("weak_jwk", "the DPoP proof's RSA key is shorter than 2048 bits", nil)
	}
	if _, err := jws.Verify(jwk.Key); err != nil {
		// A key that does not fit the algorithm (a P-384 key under ES256,
		// an EC key under RS256) fails here, before the header is kept.
		return nil, badProof("bad_signature", "the DPoP proof's signature is invalid", err)
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, badProof("bad_jwk", "the DPoP proof's jwk has no thumbprint", err)
	}
	hk = &proofHeaderKey{alg: jose.SignatureAlgorithm(sh.Algorithm), key: jwk.Key, jkt: base64.RawURLEncoding.EncodeToString(tp)}
	d.mu.Lock()
	if len(d.headers) >= maxProofHeaders {
		clear(d.headers) // rare; rebuilt one header at a time
	}
	d.headers[hdrB64] = hk
	d.mu.Unlock()
	return hk, nil
}

// verifyJWS verifies a JWS signature (RFC 7518 §3) over input with key, of
// an algorithm and key type proofKey checked together.
func verifyJWS(alg jose.SignatureAlgorithm, key any, input, sig []byte) bool {
	var h crypto.Hash
	switch alg {
	case jose.ES256, jose.RS256, jose.PS256:
		h = crypto.SHA256
	case jose.ES384, jose.RS384, jose.PS384:
		h = crypto.SHA384
	case jose.ES512, jose.RS512, jose.PS512:
		h = crypto.SHA512
	case jose.EdDSA:
		pk, ok := key.(ed25519.PublicKey)
		return ok && ed25519.Verify(pk, input, sig)
	default:
		return false
	}
	hh := h.New()
	hh.Write(input)
	digest := hh.Sum(nil)
	switch pk := key.(type) {
	case *ecdsa.PublicKey:
		n := (pk.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n || !strings.HasPrefix(string(alg), "ES") {
			return false
		}
		return ecdsa.Verify(pk, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	case *rsa.PublicKey:
		if strings.HasPrefix(string(alg), "PS") {
			return rsa.VerifyPSS(pk, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return strings.HasPrefix(string(alg), "RS") && rsa.VerifyPKCS1v15(pk, h, digest, sig) == nil
	}
	return false
}

// isDPoPType accepts typ dpop+jwt in any case, also with the application/
// prefix RFC 7515 §4.1.9 lets a typ omit.
func isDPoPType(typ string) bool {
	return strings.EqualFold(typ, "dpop+jwt") || strings.EqualFold(typ, "application/dpop+jwt")
}

// sameHTU compares a proof's htu with the request's URI after RFC 3986 §6.2.2
// and §6.2.3 normalisation, ignoring query and fragment (RFC 9449 §4.3).
func sameHTU(htu, uri string) bool {
	a, ok := normalizeHTU(htu)
	if !ok {
		return false
	}
	b, ok := normalizeHTU(uri)
	return ok && a == b
}

// normalizeHTU returns scheme://host[:port]/path of u, normalised: scheme
// and host in lower case, default port dropped, empty path "/", dot-segments
// removed, percent-encoding in upper case and unreserved characters decoded.
func normalizeHTU(u string) (string, bool) {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	p, err := url.Parse(u)
	if err != nil || p.Opaque != "" || p.User != nil || p.Host == "" {
		return "", false
	}
	scheme := strings.ToLower(p.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(p.Hostname())
	if port := p.Port(); port != "" && !(scheme == "http" && port == "80") && !(scheme == "https" && port == "443") {
		host += ":" + port
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	path, ok := normalizePercent(p.EscapedPath())
	if !ok {
		return "", false
	}
	path = removeDotSegments(path)
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// normalizePercent upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePercent(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", false
		}
		c := v[0]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(s[i+1:i+3]))
		}
		i += 2
	}
	return b.String(), true
}

// removeDotSegments is RFC 3986 §5.2.4.
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	var out []string
	segs := strings.Split(in, "/")
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if strings.HasPrefix(in, "/") && !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

// RequestURI is the URI a proof for r must name: the configured origin (plus
// its path prefix) and r's path, else r's scheme and Host, or, trusted, the
// X-Forwarded-Proto and X-Forwarded-Host a proxy set.
func (d *DPoP) RequestURI(r *http.Request) string {
	path := r.URL.EscapedPath()
	if d.origin != nil {
		return d.origin.Scheme + "://" + d.origin.Host + strings.TrimSuffix(d.origin.EscapedPath(), "/") + path
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if d.cfg.TrustForwarded {
		if p := firstForwarded(r.Header.Get("X-Forwarded-Proto")); p != "" {
			scheme = p
		}
		if h := firstForwarded(r.Header.Get("X-Forwarded-Host")); h != "" {
			host = h
		}
	}
	return scheme + "://" + host + path
}

func firstForwarded(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}
