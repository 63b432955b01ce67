package exchange_test

import (
	"context"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestExchangeCarriesOrganization: the org of the caller's access token
// travels in the transaction token's tctx, so a receiver scopes data to the
// org the edge saw; a token of no org yields a transaction of no org, and
// the requesting workload's own org never replaces the caller's.
func TestExchangeCarriesOrganization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	perms := []string{"read:profile", "create:orders"}
	orders := f.iss.M2MToken(t, "orders-service", "cancel:orders")
	ordersInGlobex := f.iss.Token(t, authztest.Claims{"sub": "orders-service@clients", "azp": "orders-service",
		"gty": "client-credentials", "scope": "cancel:orders", "org_id": "org_globex"})
	cases := []struct {
		name          string
		subject       string
		actor         string
		orgID, orgNam string
	}{
		{"user in acme", f.iss.Token(t, authztest.Claims{"permissions": perms, "org_id": "org_acme", "org_name": "acme"}), orders, "org_acme", "acme"},
		{"user without org", f.iss.Token(t, authztest.Claims{"permissions": perms}), orders, "", ""},
		{"user without org, workload in globex", f.iss.Token(t, authztest.Claims{"permissions": perms}), ordersInGlobex, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { // sequential: f.verify builds its validator once
			res, err := f.ex.Exchange(context.Background(), f.request(tc.subject, tc.actor, "read:profile"), "")
			if err != nil {
				t.Fatal(err)
			}
			c := f.verify(t, res.AccessToken)
			if c.OrgID != tc.orgID || c.OrgName != tc.orgNam {
				t.Fatalf("transaction token org = %q/%q, want %q/%q (tctx %s)", c.OrgID, c.OrgName, tc.orgID, tc.orgNam, c.TxnContext)
			}
		})
	}
}
