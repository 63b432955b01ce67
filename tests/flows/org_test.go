package flows

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// orgToken is a user's access token for a login to organization org (by
// name), through devtenant's token endpoint (contract §8).
func orgToken(t *testing.T, email, org string) string {
	t.Helper()
	r, err := api.TokenRequest(url.Values{"grant_type": {"password"}, "username": {email}, "password": {apiclient.Password},
		"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "scope": {"openid"}, "organization": {org}})
	if err != nil || r.Status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("token for %s in %s: %v %d %s %s", email, org, err, r.Status, r.Error, r.Description)
	}
	return r.AccessToken
}

// TestOrganizationIsolation: alice's order placed in acme, and the invoice
// billing opens for it, are 404 to bob of globex and to alice herself
// logged in to globex or to no organization; acme's support sees them,
// and a login to an organization one is not a member of gets no token.
func TestOrganizationIsolation(t *testing.T) {
	setup(t)
	aliceAcme := orgToken(t, apiclient.Alice, "acme")
	o := api.PlaceOrder(t, aliceAcme, apiclient.Mugs(1))
	inv := api.WaitInvoice(t, aliceAcme, o.ID, "open", apiclient.FlowDeadline)

	others := map[string]string{
		"alice in globex":          orgToken(t, apiclient.Alice, "globex"),
		"alice in no organization": api.Token(t, apiclient.Alice),
		"bob in globex":            orgToken(t, apiclient.Bob, "globex"),
	}
	for name, tok := range others {
		for _, c := range []struct{ method, svc, path string }{
			{http.MethodGet, "orders", "/v1/orders/" + o.ID},
			{http.MethodGet, "billing", "/v1/invoices/" + inv.ID},
			{http.MethodPost, "orders", "/v1/orders/" + o.ID + "/cancel"},
			{http.MethodPost, "billing", "/v1/invoices/" + inv.ID + "/pay"},
		} {
			if r := api.Call(t, c.method, c.svc, c.path, tok, nil); r.Status != http.StatusNotFound {
				t.Errorf("%s: %s %s = %s, want 404", name, c.method, c.path, r)
			}
		}
	}
	daveAcme := orgToken(t, apiclient.Dave, "acme")
	if r := api.Call(t, http.MethodGet, "orders", "/v1/orders/"+o.ID, daveAcme, nil); r.Status != http.StatusOK {
		t.Errorf("acme's support reads acme's order: %s", r)
	}
	if r := api.Call(t, http.MethodGet, "billing", "/v1/invoices/"+inv.ID, daveAcme, nil); r.Status != http.StatusOK {
		t.Errorf("acme's support reads acme's invoice: %s", r)
	}
	if got := api.GetOrder(t, aliceAcme, o.ID); got.Status != "pending" {
		t.Errorf("order after the others' attempts: %q, want pending", got.Status)
	}
	r, err := api.TokenRequest(url.Values{"grant_type": {"password"}, "username": {apiclient.Bob}, "password": {apiclient.Password},
		"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "organization": {"acme"}})
	if err != nil || r.Status != http.StatusForbidden || r.Error != "access_denied" || r.AccessToken != "" {
		t.Errorf("bob's login to acme: %v %d %s", err, r.Status, r.Error)
	}
}
