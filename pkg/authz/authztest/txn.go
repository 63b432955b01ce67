package authztest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TxnIssuer is a test Transaction Token Service: an httptest JWKS of ES256
// keys and a minter of transaction tokens.
//
//	tts := authztest.NewTxnIssuer(t)
//	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(tts.JWKSURL()), authz.WithAlgorithm("ES256"))
//	tv, _ := authz.NewTxnValidator(keys, authz.WithIssuers(tts.Issuer), authz.WithAudiences(tts.TrustDomain))
//	tok := tts.Token(t, "auth0|alice", "read:profile", nil)
type TxnIssuer struct {
	Server      *httptest.Server
	Issuer      string
	TrustDomain string

	mu      sync.Mutex
	keys    []jose.JSONWebKey // published; keys[0] signs
	retired []jose.JSONWebKey
}

// NewTxnIssuer starts a test transaction token issuer with one key; it is
// closed when the test ends.
func NewTxnIssuer(tb testing.TB) *TxnIssuer {
	tb.Helper()
	i := &TxnIssuer{Issuer: "urn:authmesh:tts", TrustDomain: "urn:authmesh:mesh"}
	i.keys = []jose.JSONWebKey{NewECKey(tb)}
	i.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		i.mu.Lock()
		set := jose.JSONWebKeySet{}
		for _, k := range i.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		i.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	tb.Cleanup(i.Server.Close)
	return i
}

// NewECKey returns a fresh P-256 signing key with a random kid.
func NewECKey(tb testing.TB) jose.JSONWebKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("authztest: generate EC key: %v", err)
	}
	return jose.JSONWebKey{Key: k, KeyID: randomID(), Algorithm: string(jose.ES256), Use: "sig"}
}

// JWKSURL is where the issuer's public keys are served.
func (i *TxnIssuer) JWKSURL() string { return i.Server.URL + "/.well-known/jwks.json" }

// SigningKey returns the key tokens are signed with now.
func (i *TxnIssuer) SigningKey() jose.JSONWebKey {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[0]
}

// Rotate signs with a new key from now on; the old one leaves the JWKS
// (as a revoked key would) and is returned.
func (i *TxnIssuer) Rotate(tb testing.TB) jose.JSONWebKey {
	i.mu.Lock()
	defer i.mu.Unlock()
	old := i.keys[0]
	i.keys = []jose.JSONWebKey{NewECKey(tb)}
	i.retired = append(i.retired, old)
	return old
}

// Token mints a transaction token for sub with scope, valid 5 minutes from
// now, requested by workload "orders-service". over replaces or adds claims
// (a nil value deletes one).
func (i *TxnIssuer) Token(tb testing.TB, sub, scope string, over Claims) string {
	tb.Helper()
	return SignJWS(tb, i.SigningKey(), map[string]any{"typ": txnTokenType}, i.claims(sub, scope, over))
}

// claims is the payload Token signs.
func (i *TxnIssuer) claims(sub, scope string, over Claims) Claims {
	now := time.Now()
	return Claims{
		"iss": i.Issuer, "aud": i.TrustDomain, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"txn": randomID(), "sub": sub, "scope": scope, "req_wl": "orders-service",
	}.With(over)
}

// SignJWS signs payload with key (its algorithm and kid), adding hdr to the
// protected header.
func SignJWS(tb testing.TB, key jose.JSONWebKey, hdr map[string]any, payload any) string {
	tb.Helper()
	opts := (&jose.SignerOptions{}).WithHeader("kid", key.KeyID)
	for k, v := range hdr {
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key.Key}, opts)
	if err != nil {
		tb.Fatalf("authztest: signer: %v", err)
	}
	b, err := json.Marshal(payload)
	if err != nil {
		tb.Fatalf("authztest: payload: %v", err)
	}
	jws, err := s.Sign(b)
	if err != nil {
		tb.Fatalf("authztest: sign: %v", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatalf("authztest: serialize: %v", err)
	}
	return out
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}
