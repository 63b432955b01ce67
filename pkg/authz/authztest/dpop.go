package authztest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// DPoPKey is a client's DPoP key (ES256, as browsers' WebCrypto and
// auth0-spa-js use) and a minter of its proofs (RFC 9449 §4).
//
//	k := authztest.NewDPoPKey(t)
//	tok := iss.Token(t, authztest.Claims{"cnf": k.Cnf()})
//	req.Header.Set("Authorization", "DPoP "+tok)
//	req.Header.Set("DPoP", k.Proof(t, "GET", "https://api.example.com/v1/me", tok))
type DPoPKey struct {
	Private *ecdsa.PrivateKey
}

// NewDPoPKey returns a fresh P-256 key.
func NewDPoPKey(tb testing.TB) *DPoPKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("authztest: dpop key: %v", err)
	}
	return &DPoPKey{Private: k}
}

// JWK is the public key as a proof carries it.
func (k *DPoPKey) JWK() map[string]any {
	pub, err := k.Private.PublicKey.Bytes() // 0x04 ‖ x ‖ y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "crv": "P-256", "x": b64(pub[1:33]), "y": b64(pub[33:65])}
}

// PrivateJWK is the key with its private member d (a proof carrying it must
// be refused).
func (k *DPoPKey) PrivateJWK() map[string]any {
	j := k.JWK()
	d, err := k.Private.Bytes()
	if err != nil {
		panic(err)
	}
	j["d"] = b64(d)
	return j
}

// JKT is the RFC 7638 SHA-256 thumbprint of the key.
func (k *DPoPKey) JKT() string {
	j := k.JWK()
	// Required members only, in lexicographic order, no whitespace.
	canon := `{"crv":"P-256","kty":"EC","x":"` + j["x"].(string) + `","y":"` + j["y"].(string) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

// Cnf is the cnf claim of a token bound to the key.
func (k *DPoPKey) Cnf() map[string]string { return map[string]string{"jkt": k.JKT()} }

// Proof returns a fresh proof (new jti, iat now) for method and uri (its
// query and fragment dropped), with ath over accessToken unless it is empty.
func (k *DPoPKey) Proof(tb testing.TB, method, uri, accessToken string) string {
	tb.Helper()
	return k.ProofWith(tb, nil, k.ProofClaims(method, uri, accessToken))
}

// ProofClaims are the claims Proof signs, to modify for attack cases.
func (k *DPoPKey) ProofClaims(method, uri, accessToken string) Claims {
	if u, err := url.Parse(uri); err == nil {
		u.RawQuery, u.Fragment = "", ""
		uri = u.String()
	}
	c := Claims{"jti": NewJTI(), "htm": method, "htu": uri, "iat": time.Now().Unix()}
	if accessToken != "" {
		c["ath"] = ATH(accessToken)
	}
	return c
}

// ProofWith signs claims with the key under the default header (typ
// dpop+jwt, alg ES256, the public jwk) with hdr's changes (a nil value
// deletes a member). payload may be []byte to sign raw bytes.
func (k *DPoPKey) ProofWith(tb testing.TB, hdr Claims, payload any) string {
	tb.Helper()
	h := Claims{"typ": "dpop+jwt", "alg": "ES256", "jwk": k.JWK()}.With(hdr)
	input := Encode(tb, h) + "." + encodePayload(tb, payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.Private, digest[:])
	if err != nil {
		tb.Fatalf("authztest: dpop sign: %v", err)
	}
	return input + "." + b64(append(pad32(r), pad32(s)...))
}

// HS256Proof is a proof MACed with secret and carrying it as an oct jwk: a
// symmetric proof, which proves nothing and must be refused.
func HS256Proof(tb testing.TB, secret []byte, claims Claims) string {
	tb.Helper()
	h := Claims{"typ": "dpop+jwt", "alg": "HS256", "jwk": map[string]any{"kty": "oct", "k": b64(secret)}}
	input := Encode(tb, h) + "." + Encode(tb, claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + b64(m.Sum(nil))
}

// ATH is a proof's ath for token: base64url SHA-256 of its ASCII.
func ATH(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64(sum[:])
}

// NewJTI returns 128 random bits, base64url.
func NewJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return b64(b[:])
}

func pad32(n *big.Int) []byte {
	b := make([]byte, 32)
	return n.FillBytes(b)
}
