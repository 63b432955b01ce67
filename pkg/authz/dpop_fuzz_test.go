package authz_test

import (
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// FuzzDPoPProof feeds the proof parser arbitrary proofs: it must never
// panic, and whatever it accepts must be a proof by the key the token is
// bound to, for this method and URI, with a jti never accepted before.
func FuzzDPoPProof(f *testing.F) {
	k := authztest.NewDPoPKey(f)
	const uri = "https://api.example.com/v1/me"
	tok := "header.payload.signature"
	good := k.Proof(f, "GET", uri, tok)
	f.Add(good)
	f.Add(k.ProofWith(f, authztest.Claims{"jwk": k.PrivateJWK()}, k.ProofClaims("GET", uri, tok)))
	f.Add(authztest.HS256Proof(f, []byte(strings.Repeat("s", 32)), k.ProofClaims("GET", uri, tok)))
	f.Add(k.ProofWith(f, authztest.Claims{"typ": "JWT"}, k.ProofClaims("GET", uri, tok)))
	f.Add(k.ProofWith(f, nil, []byte(`{"jti":1,"htm":["GET"],"iat":"x"}`)))
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("e30.e30.")
	f.Add("")
	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
	if err != nil {
		f.Fatal(err)
	}
	seen := map[string]bool{}
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := dp.Verify(t.Context(), proof, authz.ProofCheck{Method: "GET", URI: uri + "?q=1", AccessToken: tok, JKT: k.JKT()})
		if err != nil {
			if c := authz.CodeOf(err); c != authz.CodeInvalidDPoPProof && c != authz.CodeInvalidToken {
				t.Fatalf("error code %q (%v), want invalid_dpop_proof or invalid_token", c, err)
			}
			return
		}
		if p.JKT != k.JKT() || p.JTI == "" || seen[p.JTI] || time.Since(p.IssuedAt) > time.Hour {
			t.Fatalf("accepted %+v", p)
		}
		seen[p.JTI] = true
	})
}

// FuzzForwardedProof feeds the ForwardedProofVerifier (a receiver behind
// the edge) arbitrary proofs, the access-token attacks among the seeds: it
// never panics, refuses with invalid_dpop_proof or invalid_token without
// quoting the proof, and accepts only a proof by the token's key.
func FuzzForwardedProof(f *testing.F) {
	k := authztest.NewDPoPKey(f)
	const tok = "header.payload.signature"
	const uri = apiOrigin + "/v1/me"
	good := k.Proof(f, "GET", uri, tok)
	f.Add(good)
	f.Add(authztest.NewDPoPKey(f).Proof(f, "GET", uri, tok))
	f.Add(k.ProofWith(f, authztest.Claims{"jwk": k.PrivateJWK()}, k.ProofClaims("GET", uri, tok)))
	f.Add(authztest.HS256Proof(f, []byte(strings.Repeat("s", 32)), k.ProofClaims("GET", uri, tok)))
	f.Add(k.ProofWith(f, nil, k.ProofClaims("GET", uri, tok).With(authztest.Claims{"ath": nil})))
	f.Add(k.ProofWith(f, nil, []byte(`{"jti":1,"htm":["GET"],"iat":"x"}`)))
	for _, s := range authztest.Seeds(authztest.AccessTokenAttacks(f, authztest.NewIssuer(f))) {
		f.Add(s)
	}
	v, err := authz.NewForwardedProofVerifier(authz.ForwardedProofConfig{})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := v.Verify(good, k.JKT(), tok); err != nil {
		f.Fatalf("the key's own proof: %v", err)
	}
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := v.Verify(proof, k.JKT(), tok)
		if err != nil {
			if c := authz.CodeOf(err); c != authz.CodeInvalidDPoPProof && c != authz.CodeInvalidToken {
				t.Fatalf("error code %q (%v), want invalid_dpop_proof or invalid_token", c, err)
			}
			if len(proof) >= 16 && strings.Contains(err.Error(), proof) {
				t.Fatal("the error quotes the proof")
			}
			return
		}
		if p.JKT != k.JKT() || p.JTI == "" || time.Since(p.IssuedAt) > time.Hour {
			t.Fatalf("accepted %+v", p)
		}
	})
}
