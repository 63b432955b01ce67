package authz_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestDPoPAlgorithms: proofs of every accepted algorithm, signed by go-jose,
// verify (the first reading the header, the next under the cached header),
// with go-jose's RFC 7638 thumbprint of the key; a forged signature under a
// cached header fails.
func TestDPoPAlgorithms(t *testing.T) {
	t.Parallel()
	rsaKey := authztest.NewRSAKey(t)
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader) // its DER signature needs a long-form length
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	const uri = "https://api.example.com/v1/me"
	for _, tc := range []struct {
		alg jose.SignatureAlgorithm
		key crypto.Signer
	}{
		{jose.RS256, rsaKey}, {jose.PS256, rsaKey}, {jose.RS512, rsaKey}, {jose.ES256, ec256}, {jose.ES384, ec384}, {jose.ES512, ec521}, {jose.EdDSA, ed},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			t.Parallel()
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: tc.alg, Key: tc.key},
				(&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
			if err != nil {
				t.Fatal(err)
			}
			jwk := jose.JSONWebKey{Key: tc.key.Public()}
			tp, _ := jwk.Thumbprint(crypto.SHA256)
			jkt := base64.RawURLEncoding.EncodeToString(tp)
			dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
			if err != nil {
				t.Fatal(err)
			}
			var last string
			for i := range 3 {
				payload, _ := json.Marshal(map[string]any{"jti": authztest.NewJTI(), "htm": "GET", "htu": uri, "iat": time.Now().Unix(), "ath": authztest.ATH("tok")})
				obj, err := signer.Sign(payload)
				if err != nil {
					t.Fatal(err)
				}
				proof, _ := obj.CompactSerialize()
				p, err := dp.Verify(t.Context(), proof, authz.ProofCheck{Method: "GET", URI: uri, AccessToken: "tok", JKT: jkt})
				if err != nil || p.JKT != jkt {
					t.Fatalf("proof %d: %v", i, err)
				}
				last = proof
			}
			// Same (cached) header, payload changed, signature kept.
			parts := strings.Split(last, ".")
			payload, _ := json.Marshal(map[string]any{"jti": authztest.NewJTI(), "htm": "GET", "htu": uri, "iat": time.Now().Unix(), "ath": authztest.ATH("tok")})
			parts[1] = base64.RawURLEncoding.EncodeToString(payload)
			if _, err := dp.Verify(t.Context(), strings.Join(parts, "."), authz.ProofCheck{Method: "GET", URI: uri, AccessToken: "tok", JKT: jkt}); authz.CodeOf(err) != authz.CodeInvalidDPoPProof {
				t.Fatalf("forged signature under a cached header: %v", err)
			}
		})
	}
}
