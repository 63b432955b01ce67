package authz_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestPolicyRequireOrg: a RequireOrg policy refuses a token of no
// organization with 403 org_required, before any permission is looked at
// (no permission would help), for users and clients alike; a token of any
// organization passes the policy (which org owns the data is the use
// case's check).
func TestPolicyRequireOrg(t *testing.T) {
	t.Parallel()
	perm := "read:orders"
	user := func(org string) *authz.Claims {
		return &authz.Claims{Subject: "auth0|1", AZP: "authmesh-web", Permissions: []string{perm}, OrgID: org}
	}
	m2m := func(org string) *authz.Claims {
		return &authz.Claims{Subject: "orders-service@clients", AZP: "orders-service", GTY: []string{"client-credentials"},
			Scopes: authz.ParseScopes(perm), OrgID: org}
	}
	p := authz.RequireAll(perm).Users().Clients("orders-service").RequireOrg()
	cases := []policyCase{
		{"user in acme", p, user("org_acme"), ""},
		{"user in globex", p, user("org_globex"), ""},
		{"user of no org", p, user(""), authz.ReasonOrgRequired},
		{"client in acme", p, m2m("org_acme"), ""},
		{"client of no org", p, m2m(""), authz.ReasonOrgRequired},
		{"no org and no permission: org first", p, &authz.Claims{Subject: "auth0|2"}, authz.ReasonOrgRequired},
		{"org but no permission", p, &authz.Claims{Subject: "auth0|2", OrgID: "org_acme"}, authz.ReasonMissingPermission},
		{"kind refused before org", authz.RequireAll(perm).Users().RequireOrg(), m2m("org_acme"), authz.ReasonUsersOnly},
		{"without RequireOrg, no org is fine", authz.RequireAll(perm).Users(), user(""), ""},
		{"public ignores it", authz.Public().RequireOrg(), nil, ""},
	}
	checkPolicies(t, cases, nil)
	if !p.RequiresOrg() || authz.RequireAll(perm).Users().RequiresOrg() {
		t.Error("RequiresOrg does not report the policy")
	}
	// The answer names the stable reason, not a scope no token could add.
	a := authz.AnswerOf(p.Authorize(user("")))
	if a.Status != http.StatusForbidden || a.Body.Error != "insufficient_scope" ||
		a.Header.Get("WWW-Authenticate") != `Bearer realm="authmesh", error="insufficient_scope", error_description="org_required"` {
		t.Fatalf("answer %d %+v %q", a.Status, a.Body, a.Header.Get("WWW-Authenticate"))
	}
}

// TestMiddlewareRequireOrg runs RequireOrg through the Echo middleware with
// signed tokens: org_id and org_name reach the handler, a token without
// org_id is answered 403 org_required.
func TestMiddlewareRequireOrg(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.Middleware(v, reg))
	authz.GET(e, reg, "/v1/org", func(c echo.Context) error {
		cl, _ := authz.ClaimsFromEcho(c)
		return c.JSON(http.StatusOK, map[string]string{"org_id": cl.OrgID, "org_name": cl.OrgName})
	}, authz.RequireAll("read:profile").Users().RequireOrg())

	rec := do(e, http.MethodGet, "/v1/org", iss.Token(t, authztest.Claims{"org_id": "org_acme", "org_name": "acme"}))
	if rec.Code != http.StatusOK || rec.Body.String() != `{"org_id":"org_acme","org_name":"acme"}`+"\n" {
		t.Fatalf("in acme: %d %s", rec.Code, rec.Body)
	}
	rec = do(e, http.MethodGet, "/v1/org", iss.Token(t, nil))
	if rec.Code != http.StatusForbidden || rec.Header().Get("WWW-Authenticate") != `Bearer realm="authmesh", error="insufficient_scope", error_description="org_required"` {
		t.Fatalf("no org: %d %q %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
}

// TestValidateOrgClaims: org_id and org_name are decoded when present and
// empty when absent; a claim of the wrong JSON type fails the token rather
// than being read as "no organization".
func TestValidateOrgClaims(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, nil, authz.WithTokenCache(0))
	c, err := v.Validate(context.Background(), iss.Token(t, authztest.Claims{"org_id": "org_acme", "org_name": "acme"}))
	if err != nil || c.OrgID != "org_acme" || c.OrgName != "acme" {
		t.Fatalf("Validate = %+v, %v", c, err)
	}
	if c, err = v.Validate(context.Background(), iss.Token(t, nil)); err != nil || c.OrgID != "" || c.OrgName != "" {
		t.Fatalf("no org: %+v, %v", c, err)
	}
	for _, bad := range []authztest.Claims{{"org_id": 42}, {"org_id": []string{"org_acme"}}, {"org_name": true}} {
		if _, err := v.Validate(context.Background(), iss.Token(t, bad)); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("%v: Validate = %v, want invalid_token", bad, err)
		}
	}
}

// TestTxnValidatorOrg: the organization travels in a transaction token's
// tctx (the Transaction Token Service copies it from the access token); a
// tctx that is not an object fails the token.
func TestTxnValidatorOrg(t *testing.T) {
	t.Parallel()
	tts := authztest.NewTxnIssuer(t)
	v := newTxnValidator(t, tts, authz.WithTokenCache(0))
	tok := tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"tctx": authz.TxnContext{AZP: "authmesh-web", OrgID: "org_acme", OrgName: "acme"}})
	c, err := v.Validate(context.Background(), tok)
	if err != nil || c.OrgID != "org_acme" || c.OrgName != "acme" {
		t.Fatalf("Validate = %+v, %v", c, err)
	}
	if err := authz.RequireAll("read:profile").Users().RequireOrg().Authorize(c); err != nil {
		t.Fatalf("a transaction of an org fails RequireOrg: %v", err)
	}
	c, err = v.Validate(context.Background(), tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"tctx": map[string]string{"azp": "authmesh-web"}}))
	if err != nil || c.OrgID != "" {
		t.Fatalf("no org: %+v, %v", c, err)
	}
	if _, err := v.Validate(context.Background(), tts.Token(t, "auth0|alice", "read:profile", authztest.Claims{"tctx": "org_acme"})); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("tctx not an object: %v", err)
	}
}
