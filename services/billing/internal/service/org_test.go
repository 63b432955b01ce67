package service

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// orgOf reads the org_id of a token the tenant issued.
func orgOf(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		OrgID string `json:"org_id"`
	}
	_ = json.Unmarshal(raw, &c)
	return c.OrgID
}

// TestInvoicesAreScopedToTheOrganization: the invoice inherits the
// organization its order was placed under — from the transaction token of
// the customer's event (the data cannot override it), or from the data
// when the orders service relays on the customer's behalf — and is "not
// found" (404) to the same user in another organization or in none, to
// other organizations' members, for reading, paying and voiding; support's
// read:all-invoices reaches its own organization's invoices only when its
// token has one.
func TestInvoicesAreScopedToTheOrganization(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, m := range []struct{ name, email, org string }{
		{"alice@acme", "alice@authmesh.dev", "acme"}, {"alice@globex", "alice@authmesh.dev", "globex"},
		{"bob@globex", "bob@authmesh.dev", "globex"}, {"dave@acme", "dave@authmesh.dev", "acme"},
	} {
		s.tokens[m.name] = s.ms.UserTokenInOrg(t, m.email, m.org, "openid")
	}
	acmeID, globexID := orgOf(t, s.tokens["alice@acme"]), orgOf(t, s.tokens["bob@globex"])

	s.created("alice@acme", "ord_acme1", 1000) // the data names no organization: the token does
	inv := s.invoiceOf("alice@acme", "ord_acme1")
	if inv["org_id"] != acmeID {
		t.Fatalf("invoice of an acme order: %v", inv)
	}
	const path = "/v1/invoices/inv_ord_acme1"
	for who, want := range map[string]int{
		"alice@acme": 200, "alice@globex": 404, "alice": 404, "bob@globex": 404, "dave@acme": 200, "dave": 200,
	} {
		if code, _, _, _ := s.do("GET", path, who); code != want {
			t.Errorf("GET acme's invoice as %s = %d, want %d", who, code, want)
		}
	}
	if code, _, list, _ := s.do("GET", "/v1/invoices", "alice"); code != 200 || len(list) != 0 {
		t.Errorf("alice's list in no organization: %d %v", code, list)
	}
	for _, who := range []string{"alice", "alice@globex"} {
		if code, _, _, _ := s.do("POST", path+"/pay", who); code != http.StatusNotFound {
			t.Errorf("pay acme's invoice as %s = %d, want 404", who, code)
		}
		if code := serviceCode(s.void(who, "ord_acme1")); code != http.StatusNotFound {
			t.Errorf("void acme's invoice as %s = %d, want 404", who, code)
		}
	}
	if code, obj, _, _ := s.do("POST", path+"/pay", "alice@acme"); code != 200 || obj["status"] != "paid" {
		t.Errorf("pay in acme: %d %v", code, obj)
	}

	// The orders service cannot announce an order for bob: the TTS gives
	// its own identity no create:orders. His own (relayed or not, the
	// event carries his token) is in the organization his token names.
	bob := ttstest.Subject(t, s.tokens["bob"])
	if _, err := natsauth.SealEvent(s.asOrders("orders-service"), orderSubject("order.created"), "order.created:ord_globex1",
		natsauth.Envelope{Type: "order.created", UserID: bob, Data: []byte(`{"order_id":"ord_globex1"}`)}); authz.CodeOf(err) != authz.CodeInsufficientScope {
		t.Errorf("the orders service sealed an order.created for bob: %v", err)
	}
	s.orderEvent("bob@globex", "order.created", "ord_globex1", bob,
		map[string]any{"order_id": "ord_globex1", "total_cents": 500, "currency": "EUR", "items": []any{}, "org_id": globexID})
	if inv := s.invoiceOf("bob@globex", "ord_globex1"); inv["org_id"] != globexID {
		t.Errorf("relayed globex order's invoice: %v", inv)
	}
	if code, _, _, _ := s.do("GET", "/v1/invoices/inv_ord_globex1", "dave@acme"); code != http.StatusNotFound {
		t.Errorf("acme's support reads globex's invoice: %d", code)
	}
	if code, _, list, _ := s.do("GET", "/v1/invoices?user_id="+bob, "dave@acme"); code != 200 || len(list) != 0 {
		t.Errorf("acme's support lists bob's globex invoices: %d %v", code, list)
	}

	// A customer's event cannot claim an organization its token lacks.
	s.orderEvent("alice", "order.created", "ord_forged", ttstest.Subject(t, s.tokens["alice"]),
		map[string]any{"order_id": "ord_forged", "total_cents": 100, "currency": "EUR", "items": []any{}, "org_id": acmeID})
	if inv := s.invoiceOf("alice", "ord_forged"); inv["org_id"] != nil {
		t.Errorf("an event's data moved the invoice into an organization: %v", inv)
	}
}
