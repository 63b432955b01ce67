// Package authztest stands up an Auth0-shaped issuer for tests: an httptest
// server with discovery and a JWKS, RSA keys that can be rotated, and a minter
// of RS256 access tokens (plus raw signing for attack cases); a transaction
// token service (TxnIssuer); and the attack corpora every entry point of a
// kind of token runs (AccessTokenAttacks, TxnTokenAttacks).
//
//	iss := authztest.NewIssuer(t)
//	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(iss.JWKSURL()))
//	v, _ := authz.NewValidator(keys, authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience))
//	tok := iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}})
package authztest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Audience is the audience Token uses unless overridden.
const Audience = "https://api.authmesh.dev"

// Claims is a token payload; values are JSON-encoded as given.
type Claims map[string]any

// With sets over's claims in c (a nil value deletes one) and returns c.
func (c Claims) With(over Claims) Claims {
	for k, v := range over {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// Key is a signing key of the test issuer.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

var (
	poolMu sync.Mutex
	pool   []*rsa.PrivateKey
	poolN  int
)

// NewRSAKey returns an RSA-2048 key. Keys are generated once per process and
// handed out in turn, because generation is slow on small machines.
func NewRSAKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	poolMu.Lock()
	defer poolMu.Unlock()
	const size = 4
	if len(pool) < size {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			tb.Fatalf("authztest: generate key: %v", err)
		}
		pool = append(pool, k)
		return k
	}
	poolN++
	return pool[poolN%size]
}

// AttackerKey returns an RSA key that is not k: NewRSAKey's pool hands
// keys out in turn, so a forger's key must be picked apart from the key it
// pretends to be.
func AttackerKey(tb testing.TB, k *rsa.PrivateKey) *rsa.PrivateKey {
	tb.Helper()
	for {
		if a := NewRSAKey(tb); !a.Equal(k) {
			return a
		}
	}
}

// Issuer is a test identity provider.
type Issuer struct {
	Server *httptest.Server

	mu      sync.Mutex
	keys    []*Key // published, in order
	signing *Key
	seq     int

	down    atomic.Bool
	fetches atomic.Int64
	delay   atomic.Int64 // ns added to each JWKS answer
}

// NewIssuer starts an issuer with one published signing key; it is closed
// when the test ends.
func NewIssuer(tb testing.TB) *Issuer {
	tb.Helper()
	i := &Issuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if i.down.Load() {
			http.Error(w, `{"error":"down"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"issuer":   i.Issuer(),
			"jwks_uri": i.JWKSURL(),
		})
	})
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		i.fetches.Add(1)
		if d := i.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if i.down.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"down"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=15, stale-while-revalidate=15, stale-if-error=86400")
		_, _ = w.Write(i.JWKS())
	})
	i.Server = httptest.NewServer(mux)
	tb.Cleanup(i.Server.Close)
	i.signing = i.AddKey(tb)
	return i
}

// Issuer returns the iss value, with Auth0's trailing slash.
func (i *Issuer) Issuer() string { return i.Server.URL + "/" }

// JWKSURL returns the JWKS address.
func (i *Issuer) JWKSURL() string { return i.Server.URL + "/.well-known/jwks.json" }

// Fetches returns how many times the JWKS was requested.
func (i *Issuer) Fetches() int64 { return i.fetches.Load() }

// SetDown makes discovery and the JWKS answer 503 (with a JSON body, as a
// failing proxy would).
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// SetDelay delays each JWKS answer (to widen race windows in tests).
func (i *Issuer) SetDelay(d time.Duration) { i.delay.Store(int64(d)) }

// AddKey publishes a new key (it does not become the signing key).
func (i *Issuer) AddKey(tb testing.TB) *Key {
	tb.Helper()
	k := i.NewKey(tb)
	i.mu.Lock()
	i.keys = append(i.keys, k)
	i.mu.Unlock()
	return k
}

// NewKey makes a key without publishing it.
func (i *Issuer) NewKey(tb testing.TB) *Key {
	tb.Helper()
	i.mu.Lock()
	i.seq++
	id := fmt.Sprintf("key-%d", i.seq)
	i.mu.Unlock()
	return &Key{ID: id, Private: NewRSAKey(tb)}
}

// Publish adds an existing key to the JWKS.
func (i *Issuer) Publish(k *Key) {
	i.mu.Lock()
	i.keys = append(i.keys, k)
	i.mu.Unlock()
}

// RemoveKey unpublishes a key (it stays usable for signing).
func (i *Issuer) RemoveKey(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := i.keys[:0]
	for _, k := range i.keys {
		if k.ID != kid {
			out = append(out, k)
		}
	}
	i.keys = out
}

// SetSigningKey makes k the key Token signs with.
func (i *Issuer) SetSigningKey(k *Key) {
	i.mu.Lock()
	i.signing = k
	i.mu.Unlock()
}

// SigningKey returns the key Token signs with.
func (i *Issuer) SigningKey() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.signing
}

// JWKS returns the published key set as JSON.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	set := struct {
		Keys []JWK `json:"keys"`
	}{Keys: []JWK{}}
	for _, k := range i.keys {
		set.Keys = append(set.Keys, PublicJWK(k))
	}
	b, _ := json.Marshal(set)
	return b
}

// JWK is a public RSA key in JWK form.
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// PublicJWK returns the public JWK of k.
func PublicJWK(k *Key) JWK {
	pub := k.Private.PublicKey
	return JWK{"RSA", "sig", "RS256", k.ID, b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())}
}

// DefaultClaims returns an Auth0-shaped user token payload from this issuer,
// valid for an hour from now.
func (i *Issuer) DefaultClaims() Claims {
	now := time.Now()
	return Claims{
		"iss":                        i.Issuer(),
		"sub":                        "auth0|6553da60a54af58e29493993",
		"aud":                        []string{Audience, i.Issuer() + "userinfo"},
		"iat":                        now.Unix(),
		"exp":                        now.Add(time.Hour).Unix(),
		"azp":                        "authmesh-cli",
		"scope":                      "openid profile email",
		"gty":                        "password",
		"permissions":                []string{"read:profile"},
		"https://authmesh.dev/roles": []string{"customer"},
	}
}

// Token signs DefaultClaims overlaid with extra (a nil value deletes a claim)
// with the current signing key.
func (i *Issuer) Token(tb testing.TB, extra Claims) string {
	tb.Helper()
	c := i.DefaultClaims().With(extra)
	k := i.SigningKey()
	return Sign(tb, k.Private, map[string]any{"alg": "RS256", "typ": "JWT", "kid": k.ID}, c)
}

// M2MToken returns a client-credentials token for clientID with scopes.
func (i *Issuer) M2MToken(tb testing.TB, clientID, scope string) string {
	tb.Helper()
	return i.Token(tb, Claims{
		"sub": clientID + "@clients", "azp": clientID, "gty": "client-credentials",
		"scope": scope, "aud": Audience, "permissions": nil, "https://authmesh.dev/roles": nil,
	})
}

// Sign builds a compact RS256 JWS from any header and payload (for attack
// cases the header may lie about alg, kid, jku...). payload may be a []byte
// to sign raw bytes.
func Sign(tb testing.TB, key *rsa.PrivateKey, hdr map[string]any, payload any) string {
	tb.Helper()
	signingInput := Encode(tb, hdr) + "." + encodePayload(tb, payload)
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		tb.Fatalf("authztest: sign: %v", err)
	}
	return signingInput + "." + b64(sig)
}

// Encode returns the base64url JSON of v.
func Encode(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("authztest: encode: %v", err)
	}
	return b64(b)
}

func encodePayload(tb testing.TB, p any) string {
	if b, ok := p.([]byte); ok {
		return b64(b)
	}
	return Encode(tb, p)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
