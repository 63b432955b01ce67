package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// BenchmarkDPoP compares a DPoP request's verification — a cached access
// token plus a cold proof (a new proof every time: parse, ES256 verify,
// claims, thumbprint, replay claim in memory) — with a Bearer request's
// cached validation and a bare ES256 verify. Target: dpop-cold-proof ≤ 1.5×
// bearer-cached + es256-verify (x-of-target ≤ 1). The shared NATS KV replay
// claim adds one JetStream round trip in a service; it is not in here.
func BenchmarkDPoP(b *testing.B) {
	iss := authztest.NewIssuer(b)
	k := authztest.NewDPoPKey(b)
	tok := iss.Token(b, authztest.Claims{"cnf": k.Cnf()})
	bearer := iss.Token(b, nil)
	ctx := context.Background()
	const uri = "https://api.example.com/v1/me"

	b.Run("bearer-cached", func(b *testing.B) {
		v := newValidator(b, iss, nil)
		if _, err := v.Validate(ctx, bearer); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := v.Validate(ctx, bearer); err != nil {
				b.Fatal(err)
			}
		}
		record(b, "dpop/bearer-cached")
	})

	b.Run("es256-verify", func(b *testing.B) {
		digest := sha256.Sum256([]byte("header.payload"))
		sig, err := ecdsa.SignASN1(nil, k.Private, digest[:])
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if !ecdsa.VerifyASN1(&k.Private.PublicKey, digest[:], sig) {
				b.Fatal("verify")
			}
		}
		record(b, "dpop/es256")
	})

	b.Run("dpop-cold-proof", func(b *testing.B) {
		v := newValidator(b, iss, nil)
		dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), MaxAge: 10 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.Validate(ctx, tok); err != nil {
			b.Fatal(err)
		}
		proofs := make([]string, b.N) // signing is the client's work: outside the timer
		for i := range proofs {
			proofs[i] = k.Proof(b, "GET", uri, tok)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			c, err := v.Validate(ctx, tok)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := dp.Verify(ctx, proofs[i], authz.ProofCheck{Method: "GET", URI: uri, AccessToken: tok, JKT: c.JKT}); err != nil {
				b.Fatal(err)
			}
		}
		ns := record(b, "dpop/cold")
		bc, ok1 := result("dpop/bearer-cached")
		es, ok2 := result("dpop/es256")
		if ok1 && ok2 {
			b.ReportMetric(ns/(1.5*bc+es), "x-of-target")
			b.ReportMetric(ns/bc, "x-bearer-cached")
		}
	})
}
