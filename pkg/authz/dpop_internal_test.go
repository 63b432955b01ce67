package authz

import (
	"bytes"
	"context"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

const internalURI = "https://api.example.com/v1/me"

func newTestDPoP(t *testing.T) *DPoP {
	t.Helper()
	d, err := NewDPoP(DPoPConfig{Replay: NewMemoryReplayCache()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestProofKeyCacheNeverVouchesForAnotherKey: once a key's header is cached,
// a proof under that very header signed by another key is refused, and a
// proof by the other key under its own header is refused by the binding.
func TestProofKeyCacheNeverVouchesForAnotherKey(t *testing.T) {
	t.Parallel()
	d := newTestDPoP(t)
	victim, attacker := authztest.NewDPoPKey(t), authztest.NewDPoPKey(t)
	chk := ProofCheck{Method: "GET", URI: internalURI, AccessToken: "tok", JKT: victim.JKT()}
	if _, err := d.Verify(t.Context(), victim.Proof(t, "GET", internalURI, "tok"), chk); err != nil {
		t.Fatal(err)
	}
	victimHeader := strings.Split(victim.Proof(t, "GET", internalURI, "tok"), ".")[0]
	if _, ok := d.keys.get(victimHeader); !ok {
		t.Fatal("the victim's header is not cached")
	}
	// The attacker signs under the victim's header (its jwk and all).
	forged := attacker.ProofWith(t, authztest.Claims{"jwk": headerJWK(t, victimHeader)}, victim.ProofClaims("GET", internalURI, "tok"))
	if h := strings.Split(forged, ".")[0]; h != victimHeader {
		t.Fatalf("the forged proof's header differs from the victim's:\n%s\n%s", h, victimHeader)
	}
	if _, err := d.Verify(t.Context(), forged, chk); reasonOf(asError(t, err)) != "bad_signature" {
		t.Fatalf("proof under the cached header signed by another key: %v, want bad_signature", err)
	}
	if _, err := d.Verify(t.Context(), attacker.Proof(t, "GET", internalURI, "tok"), chk); reasonOf(asError(t, err)) != "dpop_binding" {
		t.Fatalf("attacker's own proof: %v, want dpop_binding", err)
	}
}

// headerJWK is the jwk of an encoded proof header.
func headerJWK(t *testing.T, hdr string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		JWK map[string]any `json:"jwk"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.JWK
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v (%T), want *Error", err, err)
	}
	return e
}

// TestProofKeyCacheBounded: the cache keeps at most maxProofKeys headers,
// none longer than maxProofHeaderBytes, and only headers of proofs whose
// signature verified.
func TestProofKeyCacheBounded(t *testing.T) {
	t.Parallel()
	d := newTestDPoP(t)
	k := authztest.NewDPoPKey(t)
	bad := k.Proof(t, "GET", internalURI, "tok")
	bad = bad[:strings.LastIndexByte(bad, '.')+1] + strings.Repeat("A", 86)
	if _, err := d.Verify(t.Context(), bad, ProofCheck{Method: "GET", URI: internalURI}); CodeOf(err) != CodeInvalidDPoPProof {
		t.Fatalf("bad signature: %v", err)
	}
	if n := len(d.keys.m); n != 0 {
		t.Fatalf("a refused proof's header was cached (%d entries)", n)
	}
	pk := &proofKey{alg: "ES256"}
	for i := range maxProofKeys + 100 {
		d.keys.put(fmt.Sprintf("header-%d", i), pk)
	}
	if n := len(d.keys.m); n != maxProofKeys {
		t.Fatalf("%d cached headers, want the bound %d", n, maxProofKeys)
	}
	if _, ok := d.keys.get(fmt.Sprintf("header-%d", maxProofKeys+99)); !ok {
		t.Fatal("the newest header was not kept")
	}
	long := strings.Repeat("h", maxProofHeaderBytes+1)
	d.keys.put(long, pk)
	if _, ok := d.keys.get(long); ok {
		t.Fatal("a header over maxProofHeaderBytes was cached")
	}
}

// TestScanProofClaims: the scanner takes the proofs clients send and gives
// the JSON decoder's answer; everything else it leaves to the decoder.
func TestScanProofClaims(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload string
		scanned bool
	}{
		{`{"jti":"abc","htm":"GET","htu":"https://a.example/x","iat":1700000000,"ath":"xyz"}`, true},
		{` { "jti" : "j" ,	"htm":"POST","htu":"https://a/b","iat":0,"nonce":"n"}` + "\n", true},
		{`{}`, true},
		{`{"jti":"a","jti":"b"}`, false},                      // duplicate: the decoder's rule
		{`{"jti":"a\u0062"}`, false},                          // escape
		{`{"jti":"é"}`, false},                                // not ASCII
		{`{"iat":1.5}`, false},                                // fraction
		{`{"iat":1e9}`, false},                                // exponent
		{`{"iat":-1}`, false},                                 // negative
		{`{"iat":0123}`, false},                               // leading zero: not JSON
		{`{"iat":1234567890123456}`, false},                   // 16 digits
		{`{"iat":"1700000000"}`, false},                       // a string
		{`{"jti":null}`, false},                               // null
		{`{"jti":"a","extra":{"x":[1,2]}}`, false},            // another member
		{`{"jti":"a"} x`, false},                              // trailing bytes
		{`{"jti":"a",}`, false},                               // trailing comma
		{`{"jti":"a"`, false},                                 // unterminated
		{`["jti"]`, false},                                    // not an object
		{`{"htm":"GET","htu":"https://a/b","iat":7}  `, true}, // trailing space
	} {
		var pc proofClaims
		if got := scanProofClaims(tc.payload, &pc); got != tc.scanned {
			t.Errorf("scan %s: %v, want %v", tc.payload, got, tc.scanned)
			continue
		}
		if tc.scanned {
			assertDecoderAgrees(t, tc.payload, pc)
		}
	}
}

// FuzzScanProofClaims: whatever the scanner reads, the JSON decoder reads the
// same way.
func FuzzScanProofClaims(f *testing.F) {
	f.Add(`{"jti":"abc","htm":"GET","htu":"https://a.example/x","iat":1700000000,"ath":"xyz"}`)
	f.Add(`{"iat":1,"nonce":"n","jti":"j"}`)
	f.Add(`{"jti":"a","jti":"b"}`)
	f.Fuzz(func(t *testing.T, payload string) {
		var pc proofClaims
		if scanProofClaims(payload, &pc) {
			assertDecoderAgrees(t, payload, pc)
		}
	})
}

func assertDecoderAgrees(t *testing.T, payload string, scanned proofClaims) {
	t.Helper()
	var j proofClaimsJSON
	if err := fastjson.Unmarshal([]byte(payload), &j); err != nil {
		t.Fatalf("scanned %q, which the decoder refuses: %v", payload, err)
	}
	if want := j.claims(); scanned != want {
		t.Fatalf("%q: scanned %+v, decoder %+v", payload, scanned, j.claims())
	}
}

// TestIsNormalHTU: the shortcut says yes only to URIs normalizeHTU leaves as
// they are, and to the usual ones.
func TestIsNormalHTU(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uri    string
		normal bool
	}{
		{"https://api.example.com/v1/me", true},
		{"http://127.0.0.1:8080/v1/orders/o-1", true},
		{"https://api.example.com/v1/file.json", true},
		{"https://api.example.com/", true},
		{"https://api.example.com", false},        // empty path: normalised to "/"
		{"https://API.example.com/v1", false},     // upper-case host
		{"HTTPS://api.example.com/v1", false},     // upper-case scheme
		{"https://api.example.com:443/v1", false}, // default port
		{"http://api.example.com:80/v1", false},
		{"https://api.example.com:/v1", false},
		{"https://api.example.com/v1/../me", false},
		{"https://api.example.com/v1/./me", false},
		{"https://api.example.com/v1/.well-known", false}, // may be a dot-segment: normalised
		{"https://api.example.com/v1/%6De", false},
		{"https://api.example.com/v1/me?x=1", false},
		{"https://api.example.com/v1/me#f", false},
		{"https://user@api.example.com/v1", false},
		{"https://[::1]:8443/v1", false},
		{"ftp://api.example.com/v1", false},
	} {
		if got := isNormalHTU(tc.uri); got != tc.normal {
			t.Errorf("isNormalHTU(%q) = %v, want %v", tc.uri, got, tc.normal)
		}
		assertNormalHTUFixed(t, tc.uri)
	}
}

// FuzzIsNormalHTU: isNormalHTU(u) implies normalizeHTU(u) == u.
func FuzzIsNormalHTU(f *testing.F) {
	f.Add("https://api.example.com/v1/me")
	f.Add("http://a:1/b/c.d")
	f.Fuzz(func(t *testing.T, u string) { assertNormalHTUFixed(t, u) })
}

func assertNormalHTUFixed(t *testing.T, u string) {
	t.Helper()
	if !isNormalHTU(u) {
		return
	}
	if n, ok := normalizeHTU(u); !ok || n != u {
		t.Fatalf("isNormalHTU(%q) but normalizeHTU gives %q, %v", u, n, ok)
	}
}

// TestECDSADER: JWS's fixed-size r‖s becomes the DER crypto/ecdsa reads —
// leading zeros dropped, a zero byte before a high bit, the long-form length
// of P-521 signatures — as encoding/asn1 writes it.
func TestECDSADER(t *testing.T) {
	t.Parallel()
	fixed := func(size int, b ...byte) []byte { return append(make([]byte, size-len(b)), b...) }
	ones := bytes.Repeat([]byte{0xff}, 66)
	for _, tc := range []struct{ r, s []byte }{
		{fixed(32, 1), fixed(32, 0x7f, 2)},
		{fixed(32, 0x80), bytes.Repeat([]byte{0x80}, 32)},
		{fixed(32), fixed(32, 0)},
		{ones[:48], fixed(48, 0, 0, 9)},
		{ones, ones},
		{fixed(66, 1, 0xff), ones},
	} {
		var want struct{ R, S *big.Int }
		want.R, want.S = new(big.Int).SetBytes(tc.r), new(big.Int).SetBytes(tc.s)
		der, err := asn1.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := ecdsaDER(nil, tc.r, tc.s); !bytes.Equal(got, der) {
			t.Errorf("r=%x s=%x:\n got %x\nwant %x", tc.r, tc.s, got, der)
		}
	}
}

// TestReplayKey: keys are NATS KV keys (no leading, trailing or double dot;
// [-/_=.A-Za-z0-9]), bounded in size, and different for different
// (thumbprint, jti) pairs, also across their two forms.
func TestReplayKey(t *testing.T) {
	t.Parallel()
	jkt := authztest.NewDPoPKey(t).JKT()
	kvKey := regexp.MustCompile(`^[-/_=A-Za-z0-9]+(\.[-/_=A-Za-z0-9]+)*$`)
	seen := map[string]string{}
	for _, pair := range [][2]string{
		{jkt, "abc"}, {jkt, "abd"}, {jkt + "x", "abc"}, {jkt, "ab.c"}, {jkt, "ab c"}, {jkt, "é"},
		{jkt, strings.Repeat("j", 64)}, {jkt, strings.Repeat("j", 65)}, {jkt, strings.Repeat("j", 256)},
		{jkt, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, {"", "abc"}, {jkt, ""}, {jkt + ".abc", ""},
	} {
		k := replayKey(pair[0], pair[1])
		if !kvKey.MatchString(k) || len(k) > 43+1+64 {
			t.Errorf("replayKey%q = %q: not a bounded KV key", pair, k)
		}
		if prev, ok := seen[k]; ok {
			t.Errorf("replayKey%q = replayKey%s = %q", pair, prev, k)
		}
		seen[k] = fmt.Sprintf("%q", pair)
	}
}

// TestMemoryReplayCache: a key is refused again for at least ttl, by
// either path (Claim with replayKey's string, or claimProof with the pair),
// across generation rotations, and claimable again once 2 ttl have passed.
func TestMemoryReplayCache(t *testing.T) {
	t.Parallel()
	const ttl = 90 * time.Second
	ctx := context.Background()
	jkt := authztest.NewDPoPKey(t).JKT()
	start := time.Now()
	clock := start
	m := NewMemoryReplayCache()
	m.now = func() time.Time { return clock }
	claim := func(jti string, viaKey bool) error {
		if viaKey {
			return m.Claim(ctx, replayKey(jkt, jti), ttl)
		}
		return m.claimProof(jkt, jti, clock, ttl)
	}
	for _, jti := range []string{"abc", strings.Repeat("j", 65), "a.b"} { // plain and hashed keys
		for _, viaKey := range []bool{false, true} {
			clock = start
			m.cur, m.prev, m.start, m.ttl = map[replayID]struct{}{}, map[replayID]struct{}{}, clock.Sub(m.epoch), 0
			if err := claim(jti, viaKey); err != nil {
				t.Fatalf("%q first claim: %v", jti, err)
			}
			// Other keys claimed meanwhile rotate the generations.
			for i, step := range []time.Duration{0, ttl / 2, ttl - time.Second, ttl, ttl + time.Second, ttl + ttl/2, 2*ttl - time.Second} {
				clock = start.Add(step)
				if err := claim(fmt.Sprintf("other%d", i), !viaKey); err != nil {
					t.Fatalf("other key at %v: %v", step, err)
				}
				if step < ttl {
					if err := claim(jti, !viaKey); !errors.Is(err, ErrReplayed) {
						t.Errorf("%q again at +%v (other path): %v, want ErrReplayed", jti, step, err)
					}
				}
			}
			clock = start.Add(2*ttl + time.Second)
			if err := claim("tick", viaKey); err != nil {
				t.Fatal(err)
			}
			clock = start.Add(3*ttl + time.Second)
			if err := claim(jti, viaKey); err != nil {
				t.Errorf("%q after 3 ttl: %v, want accepted", jti, err)
			}
		}
	}
}
