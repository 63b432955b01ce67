package exchange_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/tts/internal/exchange"
)

const ordersURL = "https://api.authmesh.dev/v1/orders"

// clock is a settable clock for the exchanger's proof checks.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }
func withClock(c *clock) func(*exchange.Config) {
	return func(cfg *exchange.Config) { cfg.Now = c.now }
}

// noVerifier is a Verifier for configuration tests.
type noVerifier struct{}

func (noVerifier) Validate(context.Context, string) (*authz.Claims, error) {
	return nil, errors.New("not used")
}

// withProof sets request_details as natsauth sends it: the proof and its
// key's thumbprint.
func withProof(r natsauth.TxnRequest, proof, jkt string) natsauth.TxnRequest {
	r.RequestDetails, _ = json.Marshal(natsauth.TxnRequestDetails{DPoPProof: proof, DPoPJKT: jkt})
	return r
}

// wantDPoPRefused checks err is the refusal of a bound token without an
// acceptable proof (400 invalid_request, as before proofs were asked for)
// and that it quotes neither the token nor the proof.
func wantDPoPRefused(t *testing.T, err error, reason string, secrets ...string) {
	t.Helper()
	var e *exchange.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != "invalid_request" || (reason != "" && e.Reason != reason) {
		t.Fatalf("got %v (%+v), want 400 invalid_request %s", err, e, reason)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(e.Error()+e.Reason, s) {
			t.Fatal("the error quotes a token or a proof")
		}
	}
}

// TestDPoPBoundTokenWithoutLiveProofRefused is the review's attack turned
// around: a compromised orders holds alice's DPoP-bound token (it saw it on
// one request) and reads cnf.jkt from it, but has no proof by her key made
// now for that token. Whatever it forwards, it gets nothing.
func TestDPoPBoundTokenWithoutLiveProofRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := authztest.NewDPoPKey(t) // alice's browser; the attacker never has it
	bound := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}, "cnf": alice.Cnf()})
	otherToken := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "cnf": alice.Cnf(), "jti": "another-token"})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")

	// The attacker decodes the token payload and copies cnf.jkt.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(bound, ".")[1])
	var c struct {
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Cnf.JKT != alice.JKT() {
		t.Fatal("no jkt", err)
	}
	attacker := authztest.NewDPoPKey(t)
	claims := func(over authztest.Claims) authztest.Claims {
		return alice.ProofClaims("POST", ordersURL, bound).With(over)
	}
	for _, tc := range []struct {
		name, proof, reason string
	}{
		{"the jkt, no proof", "", "dpop_unverified"},
		{"a proof for another access token (ath)", alice.Proof(t, "POST", ordersURL, otherToken), "dpop_proof_ath"},
		{"a proof without ath", alice.ProofWith(t, nil, claims(authztest.Claims{"ath": nil})), "dpop_proof_no_ath"},
		{"a stale proof (an old request's)", alice.ProofWith(t, nil, claims(authztest.Claims{"iat": time.Now().Add(-2 * time.Minute).Unix()})), "dpop_proof_stale"},
		{"a proof dated ahead", alice.ProofWith(t, nil, claims(authztest.Claims{"iat": time.Now().Add(5 * time.Minute).Unix()})), "dpop_proof_future"},
		{"a proof by a key that is not cnf.jkt", attacker.Proof(t, "POST", ordersURL, bound), "dpop_proof_binding"},
		{"the attacker's key claiming alice's jwk", attacker.ProofWith(t, map[string]any{"jwk": alice.JWK()}, claims(nil)), "dpop_proof_bad_signature"},
		{"not a JWS", "not-a-proof", "dpop_proof_malformed"},
		{"typ JWT", alice.ProofWith(t, map[string]any{"typ": "JWT"}, claims(nil)), "dpop_proof_typ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile create:orders"), tc.proof, c.Cnf.JKT), "")
			wantDPoPRefused(t, err, tc.reason, bound, orders, tc.proof)
		})
	}
	t.Run("a good proof, dpop_jkt naming another key", func(t *testing.T) {
		p := alice.Proof(t, "POST", ordersURL, bound)
		_, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), p, attacker.JKT()), "")
		wantDPoPRefused(t, err, "dpop_unverified", bound, p)
	})
	t.Run("request_details not JSON", func(t *testing.T) {
		r := f.request(bound, orders, "read:profile")
		r.RequestDetails = json.RawMessage(`"x"`)
		_, err := f.ex.Exchange(context.Background(), r, "")
		var xe *exchange.Error
		if !errors.As(err, &xe) || xe.Status != 400 || xe.Code != "invalid_request" || xe.Reason != "request_details" {
			t.Fatalf("got %v, want 400 invalid_request request_details", err)
		}
	})
}

// TestDPoPProofServesOneRequest: the legitimate path — the edge verified
// alice's proof and forwards it — works for every exchange of that request
// (orders makes two, with different scopes), and with the proof alone (no
// dpop_jkt); the proof is refused to another workload, and once its window
// has passed, to orders too.
func TestDPoPProofServesOneRequest(t *testing.T) {
	t.Parallel()
	var clk clock
	f := newFixture(t, withClock(&clk))
	alice := authztest.NewDPoPKey(t)
	bound := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders", "pay:invoices"}, "cnf": alice.Cnf()})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	billing := f.iss.M2MToken(t, "billing-service", "refund:invoices")
	proof := alice.Proof(t, "POST", ordersURL, bound)

	for _, scope := range []string{"read:profile", "create:orders"} {
		res, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, scope), proof, alice.JKT()), "req-1")
		if err != nil {
			t.Fatalf("%s: %v", scope, err)
		}
		if c := f.verify(t, res.AccessToken); res.Scope != scope || c.JKT != "" || c.RequestingWorkload != "orders-service" {
			t.Fatalf("%s: claims %+v", scope, c)
		}
	}
	if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), proof, ""), ""); err != nil {
		t.Fatalf("proof without dpop_jkt: %v", err)
	}
	// Another workload with the same proof: refused, though the token and
	// the scope would do (billing may ask for pay:invoices, alice holds it).
	_, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, billing, "pay:invoices"), proof, alice.JKT()), "")
	wantDPoPRefused(t, err, "dpop_proof_other_workload", bound, proof)
	// Billing with a proof of its own request is served.
	if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, billing, "pay:invoices"), alice.Proof(t, "POST", ordersURL, bound), ""), ""); err != nil {
		t.Fatalf("billing with its own proof: %v", err)
	}

	// Past the window (60 s after iat by default): orders keeps the token,
	// the proof is done.
	clk.advance(exchange.DefaultProofMaxAge + time.Second)
	_, err = f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), proof, alice.JKT()), "")
	wantDPoPRefused(t, err, "dpop_proof_stale", bound, proof)

	// An unbound token needs no proof, and request_details are ignored.
	plain := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}})
	if _, err := f.ex.Exchange(context.Background(), f.request(plain, orders, "read:profile"), ""); err != nil {
		t.Fatalf("Bearer token: %v", err)
	}
}

// TestDPoPProofWindowConfigured: the window is the configuration's.
func TestDPoPProofWindowConfigured(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *exchange.Config) { c.ProofMaxAge, c.ProofFutureSkew = 10*time.Second, 2*time.Second })
	alice := authztest.NewDPoPKey(t)
	bound := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "cnf": alice.Cnf()})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	at := func(d time.Duration) string {
		return alice.ProofWith(t, nil, alice.ProofClaims("POST", ordersURL, bound).With(authztest.Claims{"iat": time.Now().Add(d).Unix()}))
	}
	if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), at(-5*time.Second), ""), ""); err != nil {
		t.Fatalf("5 s old: %v", err)
	}
	_, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), at(-15*time.Second), ""), "")
	wantDPoPRefused(t, err, "dpop_proof_stale")
	_, err = f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), at(10*time.Second), ""), "")
	wantDPoPRefused(t, err, "dpop_proof_future")

	if _, err := exchange.New(exchange.Config{Verifier: noVerifier{}, Signer: func() exchange.Signer { return f.set },
		Workloads: map[string][]string{"x": {"y"}}, ProofMaxAge: time.Hour}); err == nil {
		t.Fatal("a proof max age of an hour accepted")
	}
}

// TestDPoPProofUsesBounded: the remembered proofs are bounded; when full of
// live ones a new proof is refused as unavailable (retry), never remembered
// by dropping another (which would free it for another workload), and room
// comes back once proofs age out.
func TestDPoPProofUsesBounded(t *testing.T) {
	t.Parallel()
	var clk clock
	f := newFixture(t, withClock(&clk), func(c *exchange.Config) { c.ProofUses = 2 })
	alice := authztest.NewDPoPKey(t)
	bound := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile", "pay:invoices"}, "cnf": alice.Cnf()})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	billing := f.iss.M2MToken(t, "billing-service", "refund:invoices")
	first := alice.Proof(t, "POST", ordersURL, bound)
	for _, p := range []string{first, alice.Proof(t, "POST", ordersURL, bound)} {
		if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), p, ""), ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), alice.Proof(t, "POST", ordersURL, bound), ""), "")
	var e *exchange.Error
	if !errors.As(err, &e) || e.Status != 503 {
		t.Fatalf("full: %v, want 503", err)
	}
	// A remembered proof still works for its workload, not for another.
	if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), first, ""), ""); err != nil {
		t.Fatalf("remembered proof: %v", err)
	}
	_, err = f.ex.Exchange(context.Background(), withProof(f.request(bound, billing, "pay:invoices"), first, ""), "")
	wantDPoPRefused(t, err, "dpop_proof_other_workload")

	clk.advance(exchange.DefaultProofMaxAge + time.Second)
	fresh := alice.ProofWith(t, nil, alice.ProofClaims("POST", ordersURL, bound).With(authztest.Claims{"iat": clk.now().Unix()}))
	if _, err := f.ex.Exchange(context.Background(), withProof(f.request(bound, orders, "read:profile"), fresh, ""), ""); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}
