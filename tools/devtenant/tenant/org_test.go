package tenant

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// acmeID and globexID are the ids devtenant derives for deploy/tenant.yaml's organizations.
var (
	acmeID   = orgID("acme")
	globexID = orgID("globex")
)

// TestOrganizationsPasswordGrant: a login that names an organization the
// user belongs to (by id, or by name: the tenant allows names) gets org_id
// and org_name; a non-member, an unknown organization or a client whose
// organization_usage is deny is refused with Auth0's error shape; a login
// that names none gets a token without either claim, as before.
func TestOrganizationsPasswordGrant(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	withOrg := func(user, org string) url.Values {
		v := passwordForm(user, "openid read:orders")
		v.Set("organization", org)
		return v
	}
	for _, tc := range []struct {
		name, user, org string
		wantID, wantNam string
	}{
		{"alice in acme by id", "alice@authmesh.dev", acmeID, acmeID, "acme"},
		{"alice in acme by name", "alice@authmesh.dev", "acme", acmeID, "acme"},
		{"alice in globex", "alice@authmesh.dev", "globex", globexID, "globex"},
		{"bob in globex", "bob@authmesh.dev", "globex", globexID, "globex"},
		{"dave in acme", "dave@authmesh.dev", "acme", acmeID, "acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tt.postForm(t, withOrg(tc.user, tc.org))
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			_, at := decodeJWT(t, r.body["access_token"].(string))
			if at["org_id"] != tc.wantID || at["org_name"] != tc.wantNam {
				t.Errorf("access token org = %v/%v", at["org_id"], at["org_name"])
			}
			if _, id := decodeJWT(t, r.body["id_token"].(string)); id["org_id"] != tc.wantID {
				t.Errorf("id token org = %v", id["org_id"])
			}
		})
	}
	t.Run("no organization: no org claims", func(t *testing.T) {
		_, at := decodeJWT(t, tt.accessToken(t, passwordForm("alice@authmesh.dev", "read:orders")))
		if _, ok := at["org_id"]; ok {
			t.Errorf("org_id in a token of no organization: %v", at)
		}
		if _, ok := at["org_name"]; ok {
			t.Errorf("org_name in a token of no organization: %v", at)
		}
	})
	for _, tc := range []struct {
		name, user, org string
		status          int
		code, desc      string
	}{
		{"bob is not in acme", "bob@authmesh.dev", "acme", 403, "access_denied", `user is not a member of the organization "acme"`},
		{"carol is in none", "carol@authmesh.dev", globexID, 403, "access_denied", `user is not a member of the organization "globex"`},
		{"unknown organization", "alice@authmesh.dev", "initech", 400, "invalid_request", "parameter organization is invalid: initech does not exist"},
		{"an id is not a name", "alice@authmesh.dev", strings.ToUpper(acmeID), 400, "invalid_request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tt.postForm(t, withOrg(tc.user, tc.org))
			if r.status != tc.status || r.body["error"] != tc.code || (tc.desc != "" && r.body["error_description"] != tc.desc) || r.body["access_token"] != nil {
				t.Errorf("%d %s", r.status, r.raw)
			}
		})
	}
	t.Run("wrong password in an organization is still a wrong password", func(t *testing.T) {
		v := withOrg("alice@authmesh.dev", "acme")
		v.Set("password", "nope")
		if r := tt.postForm(t, v); r.status != 403 || r.body["error"] != "invalid_user_password" {
			t.Errorf("%d %s", r.status, r.raw)
		}
	})
}

// TestOrganizationsClientCredentials: a client grant with organization_usage
// allow may name an organization associated with it; the token is the
// client's, with org_id. Any other combination is access_denied.
func TestOrganizationsClientCredentials(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	cc := func(client, aud, org string) response {
		v := ccForm(client, aud)
		if org != "" {
			v.Set("organization", org)
		}
		return tt.postForm(t, v)
	}
	r := cc("orders-service", apiAud, "acme")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	_, at := decodeJWT(t, r.body["access_token"].(string))
	if at["org_id"] != acmeID || at["org_name"] != "acme" || at["sub"] != "orders-service@clients" || at["gty"] != "client-credentials" {
		t.Errorf("claims %v", at)
	}
	if r := cc("orders-service", apiAud, globexID); r.status != http.StatusOK {
		t.Errorf("globex by id: %d %s", r.status, r.raw)
	}
	_, plain := decodeJWT(t, tt.accessToken(t, ccForm("orders-service", apiAud)))
	if _, ok := plain["org_id"]; ok {
		t.Errorf("org_id without the organization parameter: %v", plain)
	}
	for _, tc := range []struct {
		name, client, aud, org string
		status                 int
		code                   string
	}{
		{"grant with organization_usage deny", "billing-service", apiAud, "acme", 403, "access_denied"},
		{"management API", "tenant-admin", mgmtAud, "acme", 403, "access_denied"},
		{"unknown organization", "orders-service", apiAud, "initech", 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cc(tc.client, tc.aud, tc.org)
			if r.status != tc.status || r.body["error"] != tc.code || r.body["access_token"] != nil {
				t.Errorf("%d %s", r.status, r.raw)
			}
		})
	}
}

// TestOrganizationsConfig: the loader checks the organization settings and
// the memberships, naming the fix, and an organization not associated with
// a grant cannot be named in client credentials.
func TestOrganizationsConfig(t *testing.T) {
	t.Parallel()
	m, err := LoadModel(testIssuer, testTenantFile, devDir)
	if err != nil {
		t.Fatal(err)
	}
	acme := m.Orgs[acmeID]
	if acme == nil || acme.Name != "acme" || acme.DisplayName != "Acme Corporation" || !acme.Members[aliceID] || acme.Members[bobID] ||
		!m.OrgNameInTokens || m.Clients["authmesh-web"].OrgUsage != OrgUsageAllow || m.Clients["billing-service"].OrgUsage != OrgUsageDeny {
		t.Fatalf("model: %+v", acme)
	}
	if !strings.HasPrefix(acmeID, "org_") || len(acmeID) != 20 || acmeID == globexID {
		t.Errorf("org ids %s %s", acmeID, globexID)
	}
	// Not associated with the grant: refused although the grant allows organizations.
	s := &Server{model: m}
	delete(m.Clients["orders-service"].OrgGrants, apiAud)
	m.Clients["orders-service"].OrgGrants[apiAud] = orgGrant{usage: OrgUsageAllow, declared: true}
	acme.Clients = nil
	if _, oerr := s.clientOrg(m.Clients["orders-service"], apiAud, "acme"); oerr == nil || oerr.code != "access_denied" || !strings.Contains(oerr.desc, "on behalf of organization") {
		t.Errorf("unassociated organization: %+v", oerr)
	}
	// allow_any_organization needs no association; require needs an organization.
	m.Clients["orders-service"].OrgGrants[apiAud] = orgGrant{usage: OrgUsageRequire, anyOrg: true, declared: true}
	if o, oerr := s.clientOrg(m.Clients["orders-service"], apiAud, "acme"); oerr != nil || o != acme {
		t.Errorf("allow_any_organization: %v %+v", o, oerr)
	}
	if _, oerr := s.clientOrg(m.Clients["orders-service"], apiAud, ""); oerr == nil || oerr.code != "access_denied" {
		t.Errorf("require without organization: %+v", oerr)
	}
}

// TestOrganizationsAuthorizationCode: the SPA's login may name an
// organization; the code, its tokens and the refresh tokens that follow
// stay in it. A non-member is sent back with access_denied, an unknown
// organization with invalid_request, before any form is shown.
func TestOrganizationsAuthorizationCode(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	const cb = "http://localhost:8404/callback"
	query := func(org, challenge string) url.Values {
		return url.Values{"response_type": {"code"}, "client_id": {"authmesh-web"}, "redirect_uri": {cb},
			"scope": {"openid offline_access read:orders"}, "audience": {apiAud}, "state": {"s"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "organization": {org}}
	}
	login := func(t *testing.T, q url.Values, user string) *url.URL {
		t.Helper()
		form := url.Values{}
		for k, v := range q {
			form[k] = v
		}
		form.Set("username", user)
		form.Set("password", "dev-password")
		r := tt.do(t, http.MethodPost, "/authorize", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), nil)
		loc, err := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), cb+"?") {
			t.Fatalf("login: %d %q", r.status, r.header.Get("Location"))
		}
		return loc
	}

	v, ch := pkcePair("o")
	page := tt.do(t, http.MethodGet, "/authorize?"+query("acme", ch).Encode(), "", nil, nil)
	if page.status != http.StatusOK || !strings.Contains(string(page.raw), `name="organization" value="acme"`) {
		t.Fatalf("the form does not carry the organization: %d %s", page.status, page.raw)
	}
	code := login(t, query("acme", ch), "alice@authmesh.dev").Query().Get("code")
	r := tt.postForm(t, url.Values{"grant_type": {"authorization_code"}, "client_id": {"authmesh-web"},
		"code": {code}, "redirect_uri": {cb}, "code_verifier": {v}})
	if r.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	if _, at := decodeJWT(t, r.body["access_token"].(string)); at["org_id"] != acmeID || at["org_name"] != "acme" {
		t.Errorf("access token org %v", at)
	}
	rr := tt.postForm(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {"authmesh-web"}, "refresh_token": {r.body["refresh_token"].(string)}})
	if rr.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", rr.status, rr.raw)
	}
	if _, at := decodeJWT(t, rr.body["access_token"].(string)); at["org_id"] != acmeID {
		t.Errorf("a refreshed token left the organization: %v", at)
	}

	_, ch = pkcePair("p")
	if e := login(t, query("acme", ch), "bob@authmesh.dev").Query(); e.Get("error") != "access_denied" || e.Get("code") != "" {
		t.Errorf("bob in acme: %v", e)
	}
	r = tt.do(t, http.MethodGet, "/authorize?"+query("initech", ch).Encode(), "", nil, nil)
	if loc, _ := url.Parse(r.header.Get("Location")); r.status != http.StatusFound || loc.Query().Get("error") != "invalid_request" {
		t.Errorf("unknown organization: %d %q", r.status, r.header.Get("Location"))
	}
}

// TestIssueUserTokenInOrg: in-process issuance (component tests, devstack)
// follows the same membership rule as the token endpoint.
func TestIssueUserTokenInOrg(t *testing.T) {
	t.Parallel()
	tt := newTenant(t, nil)
	tok, err := tt.srv.IssueUserTokenInOrg("alice@authmesh.dev", "acme", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, c := decodeJWT(t, tok); c["org_id"] != acmeID || c["org_name"] != "acme" || c["sub"] != aliceID {
		t.Errorf("claims %v", c)
	}
	if _, err := tt.srv.IssueUserTokenInOrg("bob@authmesh.dev", "acme", "", ""); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("bob in acme: %v", err)
	}
	if _, err := tt.srv.IssueUserTokenInOrg("alice@authmesh.dev", "", "", ""); err == nil {
		t.Error("no organization: issued")
	}
}
