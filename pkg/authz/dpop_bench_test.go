package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// BenchmarkDPoP compares a DPoP request's verification — the same cached
// access token plus a cold proof (a new proof, a new jti, every time:
// signature, claims, htu, iat, ath, thumbprint, jti claimed in memory),
// called as the middleware calls it — with a Bearer request's cached
// validation and one bare ES256 verify. Target (issue 15): dpop ≤ 1.5×
// bearer-cached + es256-verify, i.e. x-of-target ≤ 1, reported by "paired".
// The shared NATS KV replay claim adds one JetStream round trip in a
// service; it is not in here.
//
// The first three run one after the other, as usual; on a shared machine
// the load changes between them by more than the margin the target leaves
// (half a Bearer validation against a 70 µs signature check), so "paired"
// runs them call by call in turn and compares their total times. It runs a
// fourth call too, the floor: the same cached token and only the proof's
// key lookup and signature check — what any DPoP check costs before it
// reads a claim. x-floor-of-target above 1 means the target is below what
// checking a proof's signature costs, whatever the rest does.
func BenchmarkDPoP(b *testing.B) {
	iss := authztest.NewIssuer(b)
	k := authztest.NewDPoPKey(b)
	tok := iss.Token(b, authztest.Claims{"cnf": k.Cnf()})
	bearer := iss.Token(b, nil)
	ctx := context.Background()
	const uri = "https://api.example.com/v1/me"

	// The baseline ES256 verify is RFC 7518 §3.4's, of a real proof, with
	// the standard library: SHA-256 over the signing input, then ECDSA
	// P-256. Decoding the signature and converting it to the DER crypto/ecdsa
	// reads are done once, outside the timer: the baseline is spared them,
	// DPoP is not.
	es256 := func() func() bool {
		proof := k.Proof(b, "GET", uri, tok)
		last := strings.LastIndexByte(proof, '.')
		raw, err := base64.RawURLEncoding.DecodeString(proof[last+1:])
		if err != nil {
			b.Fatal(err)
		}
		der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
		if err != nil {
			b.Fatal(err)
		}
		input, pub := []byte(proof[:last]), &k.Private.PublicKey
		return func() bool {
			digest := sha256.Sum256(input)
			return ecdsa.VerifyASN1(pub, digest[:], der)
		}
	}()

	// dpop verifies tok and a proof as the middleware does; proofs are
	// signed outside the timer (the client's work), each with its own jti.
	newDPoP := func(b *testing.B) (call func(proof string) error, floor func(proof string) bool) {
		v := newValidator(b, iss, nil)
		dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), MaxAge: 10 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		call = func(proof string) error {
			c, err := v.Validate(ctx, tok)
			if err != nil {
				return err
			}
			_, err = dp.Verify(ctx, proof, authz.ProofCheck{Method: "GET", URI: uri, AccessToken: tok, Claims: c})
			return err
		}
		if err := call(k.Proof(b, "GET", uri, tok)); err != nil { // warm: token cached, header read
			b.Fatal(err)
		}
		floor = func(proof string) bool {
			_, err := v.Validate(ctx, tok)
			return err == nil && dp.DPoPSignatureOnly(proof)
		}
		return call, floor
	}
	proofs := func(b *testing.B, n int) []string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = k.Proof(b, "GET", uri, tok)
		}
		return ps
	}

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
		b.ReportAllocs()
		for range b.N {
			if !es256() {
				b.Fatal("verify")
			}
		}
		record(b, "dpop/es256")
	})

	b.Run("dpop-cold-proof", func(b *testing.B) {
		call, _ := newDPoP(b)
		ps := proofs(b, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := call(ps[i]); err != nil {
				b.Fatal(err)
			}
		}
		ns := record(b, "dpop/cold")
		if bc, ok := result("dpop/bearer-cached"); ok {
			b.ReportMetric(ns/bc, "x-bearer-cached")
		}
	})

	// The four in turn, each first every fourth time, each call timed by
	// one interval between clock reads (a clock read, some 20-50 ns, is in
	// every interval alike). x-of-target is the DPoP calls' total time over
	// 1.5× the Bearer calls' plus the ES256 verifies', x-floor-of-target the
	// floor calls'. B/op and allocs/op are the four calls' together. The -median metrics take each call's
	// median interval instead of the mean: a call the scheduler preempted
	// (a loaded machine) counts once, not with the whole time slice it lost,
	// which on a shared machine moves the means by more than the budget.
	b.Run("paired", func(b *testing.B) {
		v := newValidator(b, iss, nil)
		if _, err := v.Validate(ctx, bearer); err != nil {
			b.Fatal(err)
		}
		call, floor := newDPoP(b)
		ps, fps := proofs(b, b.N), proofs(b, b.N)
		const bearerCall, es256Call, dpopCall, floorCall = 0, 1, 2, 3
		n, fn := 0, 0
		calls := [4]func(){
			bearerCall: func() {
				if _, err := v.Validate(ctx, bearer); err != nil {
					b.Fatal(err)
				}
			},
			es256Call: func() {
				if !es256() {
					b.Fatal("verify")
				}
			},
			dpopCall: func() {
				if err := call(ps[n]); err != nil {
					b.Fatal(err)
				}
				n++
			},
			floorCall: func() {
				if !floor(fps[fn]) {
					b.Fatal("floor: the proof's signature does not verify")
				}
				fn++
			},
		}
		var spent [4]time.Duration
		var each [4][]time.Duration
		for c := range each {
			each[c] = make([]time.Duration, 0, b.N)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			for j := range 4 {
				c := (i + j) % 4
				calls[c]()
				t1 := time.Now()
				d := t1.Sub(t0)
				spent[c] += d
				each[c] = append(each[c], d)
				t0 = t1
			}
		}
		b.StopTimer()
		if spent[bearerCall] > 0 {
			bc, es, dp := float64(spent[bearerCall]), float64(spent[es256Call]), float64(spent[dpopCall])
			b.ReportMetric(dp/(1.5*bc+es), "x-of-target")
			b.ReportMetric(dp/bc, "x-bearer-cached")
			b.ReportMetric((dp-bc-es)/float64(b.N), "ns-beyond-bearer+es256")
			b.ReportMetric(float64(spent[floorCall])/(1.5*bc+es), "x-floor-of-target")
		}
		if bc, es, dp, fl := median(each[bearerCall]), median(each[es256Call]), median(each[dpopCall]), median(each[floorCall]); bc > 0 {
			b.ReportMetric(dp/(1.5*bc+es), "x-of-target-median")
			b.ReportMetric(dp-bc-es, "ns-beyond-median")
			b.ReportMetric(fl/(1.5*bc+es), "x-floor-of-target-median")
		}
	})
}

// median is the median of ds in nanoseconds (ds is sorted in place).
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2])
}
