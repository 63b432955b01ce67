package authz_test

import (
	"errors"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
)

// policyCase is one token against one policy: reason is "" when the policy
// admits the token, else the reason of its 403 insufficient_scope.
type policyCase struct {
	name   string
	p      authz.Policy
	c      *authz.Claims
	reason string
}

// checkPolicies runs the cases; also, when not nil, looks further at each
// refusal.
func checkPolicies(t *testing.T, cases []policyCase, also func(*testing.T, *authz.Error)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.p.Authorize(tc.c)
			if tc.p.Allows(tc.c) != (err == nil) {
				t.Errorf("Allows = %v with Authorize = %v", tc.p.Allows(tc.c), err)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Authorize = %v, want allowed", err)
				}
				return
			}
			var ae *authz.Error
			if !errors.As(err, &ae) || ae.Code != authz.CodeInsufficientScope || ae.Reason != tc.reason {
				t.Fatalf("Authorize = %#v, want insufficient_scope %s", err, tc.reason)
			}
			if also != nil {
				also(t, ae)
			}
		})
	}
}

// TestPolicyWho tries every kind of token against every way of saying who:
// a kind the policy does not admit is refused with 403 insufficient_scope
// and a stable reason, whatever permissions or scopes the token holds.
func TestPolicyWho(t *testing.T) {
	t.Parallel()
	perm := "refund:invoices"
	user := &authz.Claims{Subject: "auth0|1", AZP: "authmesh-cli", Permissions: []string{perm}}
	m2m := func(client string) *authz.Claims {
		return &authz.Claims{Subject: client + "@clients", AZP: client, GTY: []string{"client-credentials"}, Scopes: authz.ParseScopes(perm)}
	}
	// A user token whose azp happens to be a named client is still a user's.
	userViaNamedApp := &authz.Claims{Subject: "auth0|2", AZP: "billing-service", Permissions: []string{perm}}
	// An M2M token without azp (or an empty one) names no client.
	m2mNoAZP := &authz.Claims{Subject: "x@clients", GTY: []string{"client-credentials"}, Scopes: authz.ParseScopes(perm)}

	users := authz.RequireAll(perm).Users()
	clients := authz.RequireAll(perm).Clients("billing-service")
	both := authz.RequireAll(perm).Users().Clients("billing-service")
	nobody := authz.RequireAll(perm)
	emptyID := authz.RequireAll(perm).Clients("")

	cases := []policyCase{
		{"users: user", users, user, ""},
		{"users: billing-service", users, m2m("billing-service"), authz.ReasonUsersOnly},
		{"users: orders-service", users, m2m("orders-service"), authz.ReasonUsersOnly},
		{"users: users-service", users, m2m("users-service"), authz.ReasonUsersOnly},
		{"clients: named client", clients, m2m("billing-service"), ""},
		{"clients: other client", clients, m2m("orders-service"), authz.ReasonClientNotAllowed},
		{"clients: user", clients, user, authz.ReasonClientsOnly},
		{"clients: user whose azp is the client", clients, userViaNamedApp, authz.ReasonClientsOnly},
		{"clients: m2m without azp", clients, m2mNoAZP, authz.ReasonClientNotAllowed},
		{"both: user", both, user, ""},
		{"both: named client", both, m2m("billing-service"), ""},
		{"both: other client", both, m2m("users-service"), authz.ReasonClientNotAllowed},
		{"nobody: user", nobody, user, authz.ReasonClientsOnly},
		{"nobody: client", nobody, m2m("billing-service"), authz.ReasonUsersOnly},
		{"empty client id names nobody", emptyID, m2mNoAZP, authz.ReasonUsersOnly},
	}
	checkPolicies(t, cases, func(t *testing.T, ae *authz.Error) {
		if !ae.KindRefused() {
			t.Errorf("%#v: not a refused kind", ae)
		}
		if len(ae.Needed) != 0 {
			t.Errorf("a refused kind names scopes %v that no token of it could add", ae.Needed)
		}
	})
	if !users.SaysWho() || !clients.SaysWho() || !both.SaysWho() || !authz.Public().SaysWho() {
		t.Error("a policy that says who reports it does not")
	}
	if nobody.SaysWho() || emptyID.SaysWho() || (authz.Policy{}).SaysWho() {
		t.Error("a policy that admits nobody reports it says who")
	}
	// Missing a permission stays what it was: the kind is admitted.
	if err := authz.RequireAll("launch:rockets").Users().Authorize(user); !errors.Is(err, authz.ErrInsufficientScope) || authz.CodeOf(err) != authz.CodeInsufficientScope {
		t.Errorf("Authorize = %v", err)
	} else if ae := err.(*authz.Error); ae.KindRefused() || ae.Reason != authz.ReasonMissingPermission {
		t.Errorf("missing permission reported as %q", ae.Reason)
	}
}

// TestAllowsIsAuthorize: Allows says yes exactly where Authorize returns
// nil, for the policies and tokens checkPolicies' tables do not hold: the
// zero policy, Public, no token, a missing permission of RequireAll and of
// RequireAny.
func TestAllowsIsAuthorize(t *testing.T) {
	t.Parallel()
	user := &authz.Claims{Subject: "auth0|1", Permissions: []string{"read:orders"}}
	for _, tc := range []struct {
		name string
		p    authz.Policy
		c    *authz.Claims
		want bool
	}{
		{"zero policy", authz.Policy{}, user, false},
		{"public, no token", authz.Public(), nil, true},
		{"no token", authz.RequireAll("read:orders").Users(), nil, false},
		{"all of, held", authz.RequireAll("read:orders").Users(), user, true},
		{"all of, one missing", authz.RequireAll("read:orders", "read:all_orders").Users(), user, false},
		{"any of, one held", authz.RequireAny("read:all_orders", "read:orders").Users(), user, true},
		{"any of, none held", authz.RequireAny("read:all_orders").Users(), user, false},
	} {
		err := tc.p.Authorize(tc.c)
		if got := tc.p.Allows(tc.c); got != tc.want || got != (err == nil) {
			t.Errorf("%s: Allows = %v, Authorize = %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
