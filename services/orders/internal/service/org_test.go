package service_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/authmesh/authmesh/services/orders/internal/adapters"
)

// TestOrdersAreScopedToTheOrganization: an order belongs to the user and
// the organization it was placed under. alice's acme order is "no such
// order" (404) to bob of globex, to alice herself logged in to globex or to
// no organization, for reading and cancelling alike, and absent from their
// lists; support's read:all-orders reaches the orders of its own
// organization only when its token has one. The order's events carry the
// organization on: in the transaction token (tctx) and in the data.
func TestOrdersAreScopedToTheOrganization(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	inOrg := func(email, org string) string { return s.ms.UserTokenInOrg(t, email, org, "") }
	aliceAcme, aliceGlobex, alice := inOrg("alice@authmesh.dev", "acme"), inOrg("alice@authmesh.dev", "globex"), s.token("alice@authmesh.dev")
	bobGlobex := inOrg("bob@authmesh.dev", "globex")
	daveAcme, dave := inOrg("dave@authmesh.dev", "acme"), s.token("dave@authmesh.dev")

	type out struct {
		ID     string `json:"id"`
		UserID string `json:"user_id"`
		OrgID  string `json:"org_id"`
	}
	place := func(tok string, hdr ...string) out {
		t.Helper()
		r := s.do(http.MethodPost, "/v1/orders", tok, mugs, hdr...)
		if r.Status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var o out
		r.JSON(t, &o)
		return o
	}
	list := func(tok, query string) map[string]bool {
		t.Helper()
		r := s.do(http.MethodGet, "/v1/orders"+query, tok, "")
		if r.Status != http.StatusOK {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
		var os []out
		r.JSON(t, &os)
		ids := map[string]bool{}
		for _, o := range os {
			ids[o.ID] = true
		}
		return ids
	}
	acme := place(aliceAcme)
	if acme.OrgID == "" || acme.UserID == "" {
		t.Fatalf("order placed in acme: %+v", acme)
	}
	personal := place(alice)
	if personal.OrgID != "" {
		t.Fatalf("order placed in no organization has org_id %q", personal.OrgID)
	}

	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"alice in acme", aliceAcme, http.StatusOK},
		{"alice in globex", aliceGlobex, http.StatusNotFound},
		{"alice in no organization", alice, http.StatusNotFound},
		{"bob in globex", bobGlobex, http.StatusNotFound},
		{"support in acme", daveAcme, http.StatusOK},
		{"support of no organization", dave, http.StatusOK},
	} {
		if r := s.do(http.MethodGet, "/v1/orders/"+acme.ID, tc.token, ""); r.Status != tc.status {
			t.Errorf("%s: GET acme's order = %d %s, want %d", tc.name, r.Status, r.Body, tc.status)
		}
	}
	if r := s.do(http.MethodGet, "/v1/orders/"+personal.ID, aliceAcme, ""); r.Status != http.StatusNotFound {
		t.Errorf("alice in acme sees her order of no organization: %d", r.Status)
	}
	for _, tok := range []string{aliceGlobex, alice, bobGlobex, daveAcme} {
		if r := s.do(http.MethodPost, "/v1/orders/"+acme.ID+"/cancel", tok, ""); r.Status != http.StatusNotFound {
			t.Errorf("cancel of acme's order by another = %d %s, want 404", r.Status, r.Body)
		}
	}
	if ids := list(aliceAcme, ""); !ids[acme.ID] || ids[personal.ID] {
		t.Errorf("alice's list in acme: %v", ids)
	}
	if ids := list(alice, ""); ids[acme.ID] || !ids[personal.ID] {
		t.Errorf("alice's list in no organization: %v", ids)
	}
	if ids := list(aliceGlobex, ""); len(ids) != 0 {
		t.Errorf("alice's list in globex: %v", ids)
	}
	// Support: acme's support sees acme's orders of alice, not her others.
	if ids := list(daveAcme, "?user_id="+acme.UserID); !ids[acme.ID] || ids[personal.ID] {
		t.Errorf("acme's support lists %v", ids)
	}
	if ids := list(dave, "?user_id="+acme.UserID); !ids[acme.ID] || !ids[personal.ID] {
		t.Errorf("support of no organization lists %v", ids)
	}
	globex := place(bobGlobex)
	if r := s.do(http.MethodGet, "/v1/orders/"+globex.ID, daveAcme, ""); r.Status != http.StatusNotFound {
		t.Errorf("acme's support reads globex's order: %d", r.Status)
	}

	// An Idempotency-Key is the user's within one organization.
	k1 := place(aliceAcme, "Idempotency-Key", "same-key")
	k2 := place(aliceGlobex, "Idempotency-Key", "same-key")
	if k1.ID == k2.ID || k2.OrgID == k1.OrgID {
		t.Errorf("the same key in two organizations returned %+v and %+v", k1, k2)
	}

	// The created event: the transaction token carries acme, so does the data.
	var found bool
	for _, m := range s.events(adapters.SubjectCreated) {
		var env struct {
			Data struct {
				OrderID string `json:"order_id"`
				OrgID   string `json:"org_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Data.OrderID != acme.ID {
			continue
		}
		found = true
		c := s.checkTxn(t, m, acme.UserID, "create:orders")
		if c.OrgID != acme.OrgID || env.Data.OrgID != acme.OrgID {
			t.Errorf("created event: token org %q, data org %q; want %q", c.OrgID, env.Data.OrgID, acme.OrgID)
		}
	}
	if !found {
		t.Error("no created event for acme's order")
	}
}
