package exchange_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/tts/internal/exchange"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
)

// revocations is written before any exchange runs, so the concurrent
// reads need no lock.
type revocations map[string]time.Time

func (r revocations) RevokedAt(sub string) (time.Time, bool) {
	at, ok := r[sub]
	return at, ok
}

type fixture struct {
	iss  *authztest.Issuer
	rev  revocations
	ex   *exchange.Exchanger
	set  *keys.Set
	txnV *authz.TxnValidator
}

func newFixture(t *testing.T, opts ...func(*exchange.Config)) *fixture {
	t.Helper()
	f := &fixture{iss: authztest.NewIssuer(t), rev: revocations{}}
	kp, err := authz.NewKeyProvider(authz.WithJWKSURL(f.iss.JWKSURL()))
	if err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(kp, authz.WithIssuers(f.iss.Issuer()), authz.WithAudiences(authztest.Audience),
		authz.WithRevocations(f.rev), authz.WithTokenCache(0))
	if err != nil {
		t.Fatal(err)
	}
	if f.set, err = keys.New(); err != nil {
		t.Fatal(err)
	}
	cfg := exchange.Config{
		Verifier: v,
		Signer:   func() exchange.Signer { return f.set },
		Workloads: map[string][]string{
			"orders-service":  {"cancel:orders", "create:orders", "read:profile"},
			"billing-service": {"pay:invoices", "refund:invoices"},
		},
		Subjects: map[string][]string{
			"orders-service":  {"orders.events.cancelled", "orders.events.created"},
			"billing-service": {"billing.events.invoice.paid"},
		},
		SubjectScopes: func(subject string) []string {
			return map[string][]string{"orders.events.created": {"create:orders"}, "orders.events.cancelled": {"cancel:orders"},
				"billing.events.invoice.paid": {"pay:invoices"}}[subject]
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.ex, err = exchange.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) request(subject, actor, scope string) natsauth.TxnRequest {
	return natsauth.TxnRequest{
		GrantType: authz.GrantTypeTokenExchange, RequestedTokenType: authz.TokenTypeTxn,
		Audience: authz.DefaultTrustDomain, Scope: scope,
		SubjectToken: subject, SubjectTokenType: authz.TokenTypeAccess,
		ActorToken: actor, ActorTokenType: authz.TokenTypeAccess,
	}
}

func TestExchangeIssuesNarrowedToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders", "cancel:orders", "pay:invoices"}, "azp": "authmesh-web"})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders read:all-orders")
	res, err := f.ex.Exchange(context.Background(), f.request(alice, orders, "read:profile pay:invoices"), "req-42")
	if err != nil {
		t.Fatal(err)
	}
	// pay:invoices is alice's but not orders' to ask for: narrowed away.
	if res.Scope != "read:profile" || res.TokenType != "N_A" || res.IssuedTokenType != authz.TokenTypeTxn || res.ExpiresIn > 300 {
		t.Fatalf("response %+v", res.TxnResponse)
	}
	c := f.verify(t, res.AccessToken)
	if c.Subject != f.iss.DefaultClaims()["sub"] || c.RequestingWorkload != "orders-service" || c.Txn != "req-42" ||
		!strings.Contains(string(c.TxnContext), "authmesh-web") || c.HasPermission("pay:invoices") {
		t.Fatalf("claims %+v", c)
	}
	// A workload's own transaction: sub is the workload.
	own, err := f.ex.Exchange(context.Background(), f.request(orders, orders, "cancel:orders"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := f.verify(t, own.AccessToken); c.Subject != "orders-service@clients" || !c.IsM2M() || c.AZP != "orders-service" || c.Txn == "" {
		t.Fatalf("service claims %+v", c)
	}
}

// An API in the RFC 9068 profile: the workload is known by client_id (no
// azp, no gty), the caller's client travels on in tctx, and a workload
// still acts only as itself.
func TestExchangeRFC9068Profile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.iss.RFC9068Token(t, authztest.Claims{"permissions": []string{"read:profile", "cancel:orders"}, "azp": "authmesh-web"})
	orders := f.iss.RFC9068M2MToken(t, "orders-service", "cancel:orders")
	res, err := f.ex.Exchange(context.Background(), f.request(alice, orders, "read:profile"), "req-9068")
	if err != nil {
		t.Fatal(err)
	}
	if c := f.verify(t, res.AccessToken); c.RequestingWorkload != "orders-service" || !strings.Contains(string(c.TxnContext), `"azp":"authmesh-web"`) {
		t.Fatalf("claims %+v", c)
	}
	own, err := f.ex.Exchange(context.Background(), f.request(orders, orders, "cancel:orders"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := f.verify(t, own.AccessToken); c.Subject != "orders-service@clients" || c.Client() != "orders-service" {
		t.Fatalf("service claims %+v", c)
	}
	// Mixed profiles: the workload's own transaction with an Auth0-profile
	// actor token and an RFC 9068 subject token of the same client.
	if _, err := f.ex.Exchange(context.Background(), f.request(orders, f.iss.M2MToken(t, "orders-service", "cancel:orders"), "cancel:orders"), ""); err != nil {
		t.Fatalf("mixed profiles: %v", err)
	}
	billing := f.iss.RFC9068M2MToken(t, "billing-service", "refund:invoices")
	stranger := f.iss.RFC9068M2MToken(t, "tenant-admin", "cancel:orders")
	for name, req := range map[string]natsauth.TxnRequest{
		"another workload's identity": f.request(orders, billing, "cancel:orders"),
		"client not a workload":       f.request(alice, stranger, "cancel:orders"),
	} {
		var e *exchange.Error
		if _, err := f.ex.Exchange(context.Background(), req, ""); !errors.As(err, &e) || e.Status != 403 {
			t.Errorf("%s: %v, want 403", name, err)
		}
	}
}

// TestExchangeRefusesAttacks: what a compromised workload might try (the
// forged and misdirected tokens are TestExchangeRefusesAccessAttacks's).
func TestExchangeRefusesAttacks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile", "cancel:orders"}})
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	billing := f.iss.M2MToken(t, "billing-service", "refund:invoices")
	stranger := f.iss.M2MToken(t, "tenant-admin", "cancel:orders")
	blocked := f.iss.Token(t, authztest.Claims{"sub": "auth0|blocked", "permissions": []string{"read:profile"}, "iat": time.Now().Add(-time.Minute).Unix()})
	f.rev["auth0|blocked"] = time.Now()
	dpopKey := authztest.NewDPoPKey(t)
	bound := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "cnf": dpopKey.Cnf()})
	vouch := func(jkt string) func(*natsauth.TxnRequest) {
		return func(r *natsauth.TxnRequest) { r.RequestDetails = []byte(`{"dpop_jkt":"` + jkt + `"}`) }
	}

	mod := func(r natsauth.TxnRequest, fn func(*natsauth.TxnRequest)) natsauth.TxnRequest { fn(&r); return r }
	for _, tc := range []struct {
		name   string
		req    natsauth.TxnRequest
		status int
	}{
		{"no actor token", f.request(alice, "", "read:profile"), 400},
		{"user token as actor", f.request(alice, alice, "read:profile"), 403},
		{"client not a workload", f.request(alice, stranger, "cancel:orders"), 403},
		{"no subject token", f.request("", orders, "read:profile"), 400},
		{"blocked user", f.request(blocked, orders, "read:profile"), 401},
		{"scope the token lacks", f.request(alice, orders, "create:orders"), 403},
		{"scope the workload may not ask", f.request(alice, billing, "read:profile cancel:orders"), 403},
		{"another workload's identity", f.request(orders, billing, "cancel:orders"), 403},
		{"no scope", f.request(alice, orders, ""), 400},
		{"wrong audience asked", mod(f.request(alice, orders, "read:profile"), func(r *natsauth.TxnRequest) { r.Audience = "https://api.authmesh.dev" }), 400},
		{"refresh token type", mod(f.request(alice, orders, "read:profile"), func(r *natsauth.TxnRequest) {
			r.SubjectTokenType = "urn:ietf:params:oauth:token-type:refresh_token"
		}), 400},
		{"other grant", mod(f.request(alice, orders, "read:profile"), func(r *natsauth.TxnRequest) { r.GrantType = "client_credentials" }), 400},
		{"DPoP-bound subject without the edge's proof check", f.request(bound, orders, "read:profile"), 400},
		{"DPoP-bound subject vouched for another key", mod(f.request(bound, orders, "read:profile"), vouch(authztest.NewDPoPKey(t).JKT())), 400},
		{"DPoP-bound subject vouched for its own key, no proof", mod(f.request(bound, orders, "read:profile"), vouch(dpopKey.JKT())), 400},
		{"other token type", mod(f.request(alice, orders, "read:profile"), func(r *natsauth.TxnRequest) { r.RequestedTokenType = authz.TokenTypeAccess }), 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := f.ex.Exchange(context.Background(), tc.req, "")
			var e *exchange.Error
			if !errors.As(err, &e) || e.Status != tc.status {
				t.Fatalf("want %d, got %v (%+v)", tc.status, err, res)
			}
			for _, tok := range []string{tc.req.SubjectToken, tc.req.ActorToken} {
				if tok != "" && strings.Contains(e.Error(), tok) {
					t.Fatal("the error quotes a token")
				}
			}
		})
	}
}

// TestExchangeRefusesAccessAttacks runs authztest's access-token attacks as
// the subject token and as the actor token: each is refused 401 with the
// validator's reason under the token's role, never quoted.
func TestExchangeRefusesAccessAttacks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.iss.Token(t, nil)
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	if _, err := f.ex.Exchange(context.Background(), f.request(alice, orders, "read:profile"), ""); err != nil {
		t.Fatalf("the tenant's tokens: %v", err)
	}
	for _, a := range authztest.AccessTokenAttacks(t, f.iss) {
		t.Run(a.Name, func(t *testing.T) {
			t.Parallel()
			for role, req := range map[string]natsauth.TxnRequest{
				"subject": f.request(a.Token, orders, "read:profile"),
				"actor":   f.request(alice, a.Token, "read:profile"),
			} {
				_, err := f.ex.Exchange(context.Background(), req, "")
				var e *exchange.Error
				if !errors.As(err, &e) || e.Status != 401 || e.Reason != role+"_"+a.Reason {
					t.Fatalf("%s token: %v, want 401 %s_%s", role, err, role, a.Reason)
				}
				if strings.Contains(e.Error(), a.Token) {
					t.Fatalf("%s token: the error quotes it", role)
				}
			}
		})
	}
}

func TestExchangeNeverOutlivesSubject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	soon := f.iss.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "exp": time.Now().Add(40 * time.Second).Unix()})
	res, err := f.ex.Exchange(context.Background(), f.request(soon, f.iss.M2MToken(t, "orders-service", "x"), "read:profile"), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExpiresIn > 41 {
		t.Fatalf("expires in %d s, past the access token", res.ExpiresIn)
	}
}

// TestExchangeBindsEvents: a token asked for with request_details.event is
// bound to that event (tctx.evt), lives the event lifetime rather than the
// subject token's remaining minutes, and still grants only what the caller
// holds: the orders service, whose own token holds no create:orders, cannot
// have an order.created event of its own, nor bind an event to a subject
// another service publishes on.
func TestExchangeBindsEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *exchange.Config) { c.EventLifetime = 6 * time.Hour })
	orders := f.iss.M2MToken(t, "orders-service", "x")
	soon := f.iss.Token(t, authztest.Claims{"permissions": []string{"create:orders"}, "exp": time.Now().Add(40 * time.Second).Unix()})
	ev := authz.NewEventBinding("orders.events.created", []byte(`{"id":"e1"}`))
	withEvent := func(r natsauth.TxnRequest, ev authz.EventBinding) natsauth.TxnRequest {
		r.RequestDetails, _ = json.Marshal(natsauth.TxnRequestDetails{Event: &ev})
		return r
	}
	res, err := f.ex.Exchange(context.Background(), withEvent(f.request(soon, orders, "create:orders"), ev), "")
	if err != nil {
		t.Fatal(err)
	}
	c := f.verify(t, res.AccessToken)
	if c.Event == nil || *c.Event != ev || !c.Event.Matches("orders.events.created", []byte(`{"id":"e1"}`)) {
		t.Fatalf("tctx.evt %+v, want %+v", c.Event, ev)
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt); life != 6*time.Hour || res.ExpiresIn != int64((6*time.Hour).Seconds()) {
		t.Fatalf("lives %v (expires_in %d), want the event lifetime", life, res.ExpiresIn)
	}
	plain, err := f.ex.Exchange(context.Background(), f.request(soon, orders, "create:orders"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := f.verify(t, plain.AccessToken); c.Event != nil || plain.ExpiresIn > 41 {
		t.Fatalf("an unbound token: event %+v, expires in %d", c.Event, plain.ExpiresIn)
	}

	for _, tc := range []struct {
		name         string
		req          natsauth.TxnRequest
		status       int
		code, reason string
	}{
		{"the service as itself", withEvent(f.request(f.iss.M2MToken(t, "orders-service", "cancel:orders read:all-orders"), orders, "create:orders"), ev),
			403, "insufficient_scope", "no_scope_granted"},
		{"a scope the event's consumers do not check", withEvent(f.request(f.iss.Token(t, authztest.Claims{"permissions": []string{"create:orders", "read:profile"}}), orders, "read:profile"), ev),
			403, "insufficient_scope", "no_scope_granted"},
		{"a request subject", withEvent(f.request(soon, orders, "read:profile"), authz.NewEventBinding("authmesh.users.profile", nil)),
			403, "insufficient_scope", "event_subject"},
		{"another service's subject", withEvent(f.request(soon, orders, "create:orders"), authz.NewEventBinding("billing.events.invoice.paid", nil)),
			403, "insufficient_scope", "event_subject"},
		{"no digest", withEvent(f.request(soon, orders, "create:orders"), authz.EventBinding{Subject: "orders.events.created"}),
			400, "invalid_request", "event"},
		{"a digest that is not SHA-256", withEvent(f.request(soon, orders, "create:orders"), authz.EventBinding{Subject: "orders.events.created", SHA256: "AAAA"}),
			400, "invalid_request", "event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.ex.Exchange(context.Background(), tc.req, "")
			var xe *exchange.Error
			if !errors.As(err, &xe) || xe.Status != tc.status || xe.Code != tc.code || xe.Reason != tc.reason {
				t.Fatalf("got %v, want %d %s (%s)", err, tc.status, tc.code, tc.reason)
			}
		})
	}
}

func (f *fixture) verify(t *testing.T, tok string) *authz.Claims {
	t.Helper()
	if f.txnV == nil {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(f.set.JWKS())
		}))
		t.Cleanup(srv.Close)
		kp, err := authz.NewKeyProvider(authz.WithJWKSURL(srv.URL), authz.WithAlgorithm("ES256"))
		if err != nil {
			t.Fatal(err)
		}
		if f.txnV, err = authz.NewTxnValidator(kp, authz.WithIssuers(authz.DefaultTxnIssuer), authz.WithAudiences(authz.DefaultTrustDomain)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := f.txnV.Validate(context.Background(), tok)
	if err != nil {
		t.Fatalf("issued token does not verify: %v", err)
	}
	return c
}
