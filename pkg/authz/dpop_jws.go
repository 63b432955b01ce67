package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// A proof is a compact JWS whose protected header carries the key it is
// signed with. This file reads that header into a key (once per header: a
// client signs every proof of a session under the same one) and checks the
// signature of every proof with it.

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

// proofKey is what a proof's protected header yields once checked: the
// algorithm, the public key fitting it and the key's thumbprint.
type proofKey struct {
	alg string
	key any // *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey
	jkt string
}

// proofKeyCache remembers checked headers by their encoded form. What it
// holds is a pure function of those bytes (typ, alg, the public key and its
// thumbprint), never a verdict on a signature: every proof's signature is
// verified with the key, so a proof under a cached header but signed by
// another key fails as it would uncached. A header is stored only after a
// proof under it verified, at most maxProofHeaderBytes long, and the cache
// holds at most maxProofKeys of them (an arbitrary one makes room): about
// 6 MiB at worst.
type proofKeyCache struct {
	mu sync.RWMutex
	m  map[string]*proofKey
}

const (
	maxProofKeys = 4096
	// maxProofHeaderBytes fits an RSA-4096 jwk (about 1 KiB encoded).
	maxProofHeaderBytes = 1536
)

func (c *proofKeyCache) get(hdr string) (*proofKey, bool) {
	c.mu.RLock()
	k, ok := c.m[hdr]
	c.mu.RUnlock()
	return k, ok
}

func (c *proofKeyCache) put(hdr string, k *proofKey) {
	if len(hdr) > maxProofHeaderBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.m {
		if len(c.m) < maxProofKeys {
			break
		}
		delete(c.m, key)
	}
	c.m[strings.Clone(hdr)] = k
}

// proofHeader is a proof's protected header: typ, alg, the jwk, and crit,
// whose presence refuses the proof.
type proofHeader struct {
	Typ  string          `json:"typ"`
	Alg  string          `json:"alg"`
	JWK  *proofJWK       `json:"jwk"`
	Crit json.RawMessage `json:"crit"`
}

// proofJWK is the members of a jwk we use, and its private members, whose
// presence alone refuses the proof (a client that sends its private key has
// lost it; an oct key is a shared secret).
type proofJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`

	D  json.RawMessage `json:"d"`
	P  json.RawMessage `json:"p"`
	Q  json.RawMessage `json:"q"`
	DP json.RawMessage `json:"dp"`
	DQ json.RawMessage `json:"dq"`
	QI json.RawMessage `json:"qi"`
	K  json.RawMessage `json:"k"`
}

// readProofHeader checks the encoded protected header hdr: typ dpop+jwt, no
// crit, an accepted alg, and a public jwk that fits the alg.
func (d *DPoP) readProofHeader(hdr string) (*proofKey, error) {
	raw, err := base64.RawURLEncoding.DecodeString(hdr)
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
	j := ph.JWK
	if j == nil {
		return nil, badProof("no_jwk", "the DPoP proof has no jwk", nil)
	}
	if j.D != nil || j.P != nil || j.Q != nil || j.DP != nil || j.DQ != nil || j.QI != nil || j.K != nil {
		return nil, badProof("private_jwk", "the DPoP proof's jwk must be a public key", nil)
	}
	if !slices.Contains(d.cfg.Algorithms, ph.Alg) {
		return nil, badProof("alg", "the DPoP proof is not signed with an accepted algorithm", nil)
	}
	return publicKeyFor(ph.Alg, j)
}

// publicKeyFor parses j as a public key of the type alg needs (ES256 a
// P-256 point on the curve, RS*/PS* an RSA key of 2048 bits or more, EdDSA
// an Ed25519 key) and computes its RFC 7638 thumbprint from the members.
func publicKeyFor(alg string, j *proofJWK) (*proofKey, error) {
	bad := badProof("bad_jwk", "the DPoP proof's jwk is not a usable public key of its alg", nil)
	b64 := base64.RawURLEncoding
	var key any
	var canon string // RFC 7638 §3.2: required members, sorted, no whitespace
	switch {
	case strings.HasPrefix(alg, "ES"):
		curve, crv := ecCurve(alg)
		if curve == nil {
			return nil, bad
		}
		size := (curve.Params().BitSize + 7) / 8
		x, errX := b64.DecodeString(j.X)
		y, errY := b64.DecodeString(j.Y)
		if j.Kty != "EC" || j.Crv != crv || errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, bad
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(curve, slices.Concat([]byte{4}, x, y)) // refuses points off the curve
		if err != nil {
			return nil, bad
		}
		key = pk
		canon = `{"crv":"` + crv + `","kty":"EC","x":"` + b64.EncodeToString(x) + `","y":"` + b64.EncodeToString(y) + `"}`
	case strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS"):
		n, errN := b64.DecodeString(j.N)
		e, errE := b64.DecodeString(j.E)
		if j.Kty != "RSA" || errN != nil || errE != nil {
			return nil, bad
		}
		pk := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
		ev := new(big.Int).SetBytes(e)
		if !ev.IsInt64() || ev.Int64() < 3 || ev.Int64() > 1<<31-1 || ev.Bit(0) == 0 || pk.N.BitLen() > 16384 {
			return nil, bad
		}
		if pk.N.BitLen() < 2048 {
			return nil, badProof("weak_jwk", "the DPoP proof's RSA key is shorter than 2048 bits", nil)
		}
		pk.E = int(ev.Int64())
		key = pk
		canon = `{"e":"` + b64.EncodeToString(ev.Bytes()) + `","kty":"RSA","n":"` + b64.EncodeToString(pk.N.Bytes()) + `"}`
	case alg == "EdDSA":
		x, err := b64.DecodeString(j.X)
		if j.Kty != "OKP" || j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, bad
		}
		key = ed25519.PublicKey(x)
		canon = `{"crv":"Ed25519","kty":"OKP","x":"` + b64.EncodeToString(x) + `"}`
	default:
		return nil, badProof("alg", "the DPoP proof is not signed with an accepted algorithm", nil)
	}
	sum := sha256.Sum256([]byte(canon))
	return &proofKey{alg: alg, key: key, jkt: b64.EncodeToString(sum[:])}, nil
}

// ecCurve is the curve of an ES algorithm (RFC 7518 §3.4), and its crv.
func ecCurve(alg string) (elliptic.Curve, string) {
	switch alg {
	case "ES256":
		return elliptic.P256(), "P-256"
	case "ES384":
		return elliptic.P384(), "P-384"
	case "ES512":
		return elliptic.P521(), "P-521"
	}
	return nil, ""
}

// verifySignature checks the signature of the compact JWS proof (whose
// dots are at first and last) with k.
func (k *proofKey) verifySignature(proof string, last int) bool {
	input := bytesOf(proof[:last])
	var sigBuf [132]byte // an ES512 signature; RSA ones are decoded on the heap
	enc := proof[last+1:]
	var sig []byte
	if n := base64.RawURLEncoding.DecodedLen(len(enc)); n <= len(sigBuf) {
		m, err := base64.RawURLEncoding.Decode(sigBuf[:], bytesOf(enc))
		if err != nil {
			return false
		}
		sig = sigBuf[:m]
	} else {
		var err error
		if sig, err = base64.RawURLEncoding.DecodeString(enc); err != nil {
			return false
		}
	}
	switch pk := k.key.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(pk, input, sig)
	case *ecdsa.PublicKey:
		var digest []byte
		switch k.alg {
		case "ES256":
			s := sha256.Sum256(input)
			digest = s[:]
		case "ES384":
			s := sha512.Sum384(input)
			digest = s[:]
		default: // ES512: publicKeyFor pairs each ES alg with its curve
			s := sha512.Sum512(input)
			digest = s[:]
		}
		size := (pk.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		var der [8 + 2*(66+1)]byte
		return ecdsa.VerifyASN1(pk, digest, ecdsaDER(der[:0], sig[:size], sig[size:]))
	case *rsa.PublicKey:
		h, digest := crypto.SHA256, []byte(nil)
		switch k.alg[2:] {
		case "256":
			s := sha256.Sum256(input)
			digest = s[:]
		case "384":
			s := sha512.Sum384(input)
			h, digest = crypto.SHA384, s[:]
		default:
			s := sha512.Sum512(input)
			h, digest = crypto.SHA512, s[:]
		}
		if strings.HasPrefix(k.alg, "PS") {
			return rsa.VerifyPSS(pk, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(pk, h, digest, sig) == nil
	}
	return false
}

// ecdsaDER appends the ASN.1 DER form of the signature (r, s) — what
// crypto/ecdsa verifies — to b: JWS carries r and s as fixed-size unsigned
// big-endian integers (RFC 7518 §3.4).
func ecdsaDER(b, r, s []byte) []byte {
	r, s = minimalInt(r), minimalInt(s)
	body := 4 + len(r) + len(s) + int(r[0]>>7) + int(s[0]>>7)
	b = append(b, 0x30)
	if body >= 0x80 {
		b = append(b, 0x81)
	}
	b = append(b, byte(body))
	for _, v := range [2][]byte{r, s} {
		if v[0]&0x80 != 0 {
			b = append(b, 0x02, byte(len(v)+1), 0) // positive: a leading zero byte
		} else {
			b = append(b, 0x02, byte(len(v)))
		}
		b = append(b, v...)
	}
	return b
}

// minimalInt strips leading zero bytes, keeping one byte.
func minimalInt(v []byte) []byte {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	return v
}

// bytesOf views s's bytes without copying them, for functions that only
// read their argument (hashes, decoders, comparisons).
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// isDPoPType accepts typ dpop+jwt in any case, also with the application/
// prefix RFC 7515 §4.1.9 lets a typ omit.
func isDPoPType(typ string) bool {
	return strings.EqualFold(typ, "dpop+jwt") || strings.EqualFold(typ, "application/dpop+jwt")
}
