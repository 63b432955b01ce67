package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/authmesh/authmesh/tools/devtenant/tenanttest"
)

// TestSPADPoPRequired runs the SPA against the whole stack with every service
// requiring DPoP (<P>DPOP_MODE=required): alice's tokens come bound to her
// page's key (token_type DPoP, cnf.jkt its thumbprint), orders, invoices and
// her profile work with proofs, a refresh keeps the binding, the same token
// as Bearer is refused, and her next session has a new key. TestSPA covers
// the default (DPoP allowed) with the same SPA.
func TestSPADPoPRequired(t *testing.T) {
	// The services read their environment, and the stack's children inherit it.
	for _, svc := range []string{"USERS", "ORDERS", "BILLING"} {
		t.Setenv(svc+"_DPOP_MODE", "required")
	}
	ctx, exe, shots := onStack(t)

	alice := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "dpop-alice"}
	first := loginBound(alice)

	orderAndPay(alice)
	calls := evalJSON[map[string]int](t, alice, `
		const api = await import("/api.js");
		return {
			orders: api.list(await api.orders.mine(), "orders").length,
			invoices: api.list(await api.billing.mine(), "invoices").length,
			me: (await api.users.me()) ? 1 : 0,
		};`)
	if calls["orders"] < 1 || calls["invoices"] < 1 || calls["me"] != 1 {
		t.Errorf("alice: with DPoP required, orders %d, invoices %d, profile %d; want her paid order, its invoice and her profile", calls["orders"], calls["invoices"], calls["me"])
	}

	// The bound token alone is worth nothing: as Bearer it is refused
	// (downgrade), and so is an unbound token where DPoP is required.
	for _, api := range []string{"http://localhost:8401/v1/me", "http://localhost:8402/v1/orders", "http://localhost:8403/v1/invoices"} {
		if got := statusWithin(api, first.Token, http.StatusUnauthorized, 0); got != http.StatusUnauthorized {
			t.Errorf("GET %s with alice's DPoP token as Bearer answers %d, want 401", api, got)
		}
	}
	if got := statusWithin("http://localhost:8402/v1/orders", passwordToken(t, "alice@authmesh.dev"), http.StatusUnauthorized, 0); got != http.StatusUnauthorized {
		t.Errorf("GET /v1/orders with an unbound Bearer token answers %d where DPoP is required, want 401", got)
	}

	// The refresh token is bound to the key too: the page refreshes with a
	// proof and gets a token bound to the same key.
	alice.do("session-refreshed", 30*time.Second,
		click(`#refresh`),
		waitJS(`document.getElementById("profile-session").dataset.refreshCount === "1"`),
		click(`#orders-reload`),
		waitJS(`document.getElementById("orders-list").dataset.state === "loaded" && !!document.querySelector('#orders-list tr[data-order-id]')`),
	)
	refreshed := sessionOf(t, alice)
	if refreshed.TokenType != "DPoP" || refreshed.CNF != first.PageJKT || refreshed.Token == first.Token {
		t.Errorf("after refresh: token_type %q, cnf.jkt %q (first %q), new token %v; want a new DPoP token bound to the same key",
			refreshed.TokenType, refreshed.CNF, first.PageJKT, refreshed.Token != first.Token)
	}

	alice.do("logged-out", 20*time.Second,
		click(`#logout`),
		visible(`#signed-out`),
	)
	alice.login("alice@authmesh.dev")
	second := sessionOf(t, alice)
	if second.TokenType != "DPoP" || second.CNF != second.PageJKT || second.PageJKT == first.PageJKT {
		t.Errorf("next session: token_type %q, cnf.jkt %q, page key %q (previous %q); want a DPoP token bound to a new key",
			second.TokenType, second.CNF, second.PageJKT, first.PageJKT)
	}
	alice.do("next-session-orders", 20*time.Second,
		click(`#tab-orders`),
		waitJS(`document.getElementById("orders-list").dataset.state === "loaded" && !!document.querySelector('#orders-list tr[data-order-id]')`),
	)
}

// TestSPATenantRequiresDPoP runs the SPA against the whole stack with the
// tenant requiring DPoP at its token endpoint: deploy/tenant.yaml's API with
// proof_of_possession {mechanism: dpop, required: true, required_for:
// public_clients}, as Auth0 configures it for browser apps. The tenant
// refuses the public CLI client's password grant without a proof (so
// devstack takes no start-up token); alice's page, which sends proofs on its
// token requests, signs in with a token bound to its key, and places and
// pays an order with the services in their default mode (DPoP allowed).
// The services' own client-credentials tokens (confidential clients) stay
// Bearer: pkg/authz/m2m sends no proofs, so required_for all_clients would
// refuse them and the stack would not start.
func TestSPATenantRequiresDPoP(t *testing.T) {
	tenantFile := tenanttest.WithPoP(t, filepath.Join(repoRoot(t), "deploy", "tenant.yaml"),
		"    proof_of_possession:\n      mechanism: dpop\n      required: true\n      required_for: public_clients\n")
	ctx, exe, shots := onStackWithTenant(t, tenantFile)

	resp, err := http.PostForm("http://localhost:8400/oauth/token", url.Values{
		"grant_type": {"password"}, "client_id": {"authmesh-cli"}, "username": {"alice@authmesh.dev"},
		"password": {"dev-password"}, "audience": {"https://api.authmesh.dev"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var refusal struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&refusal)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || refusal.Error != "invalid_request" {
		t.Errorf("password grant without a proof: %d %q, want 400 invalid_request", resp.StatusCode, refusal.Error)
	}

	alice := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "tenant-dpop-alice"}
	loginBound(alice)
	orderAndPay(alice)
}

// loginBound signs alice in and returns her session, whose token must be
// DPoP-bound to the page's key.
func loginBound(alice *stepper) dpopSession {
	alice.t.Helper()
	alice.login("alice@authmesh.dev")
	s := sessionOf(alice.t, alice)
	if s.TokenType != "DPoP" || s.CNF == "" || s.CNF != s.PageJKT {
		alice.t.Fatalf("alice: token_type %q, cnf.jkt %q, page key %q: want a DPoP token bound to the page's key", s.TokenType, s.CNF, s.PageJKT)
	}
	return s
}

// placeOrder orders a mug in the shop and waits for the order's open
// invoice, as step.
func placeOrder(s *stepper, step string) {
	s.t.Helper()
	s.do(step, 30*time.Second, orderMugs("1",
		visible(`#detail-invoice-status[data-status="open"]`),
	)...)
}

// orderAndPay places an order and pays its invoice.
func orderAndPay(s *stepper) {
	s.t.Helper()
	placeOrder(s, "order-placed")
	s.do("order-paid", 30*time.Second,
		click(`#pay-invoice`),
		visible(`#detail-order-status[data-status="paid"]`),
		visible(`#detail-invoice-status[data-status="paid"]`),
	)
}

// dpopSession is what the page holds for its session.
type dpopSession struct {
	TokenType string `json:"tokenType"`
	Token     string `json:"token"`
	CNF       string `json:"cnf"`     // the access token's cnf.jkt
	PageJKT   string `json:"pageJkt"` // the thumbprint of the page's DPoP key
}

func sessionOf(t *testing.T, s *stepper) dpopSession {
	t.Helper()
	return evalJSON[dpopSession](t, s, `
		const a = await import("/auth.js");
		const d = await import("/dpop.js");
		const s = a.current();
		return {tokenType: s.tokenType, token: s.accessToken, cnf: s.claims.cnf?.jkt || "", pageJkt: await d.thumbprint()};`)
}

// evalJSON runs an async function body in the page (the app's own module
// instances: same URLs) and decodes its JSON result.
func evalJSON[T any](t *testing.T, s *stepper, body string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	expr := fmt.Sprintf(`(async () => JSON.stringify(await (async () => { %s })()))()`, body)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	var v T
	if err != nil {
		t.Fatalf("%s: evaluate: %v\n%s\n  page: %s", s.who, err, body, s.pageState())
	}
	if err := json.Unmarshal([]byte(got), &v); err != nil {
		t.Fatalf("%s: result %s: %v", s.who, got, err)
	}
	return v
}
