package flows

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestDPoPOrderEndToEnd: a DPoP-bound token from devtenant (proof at the
// token endpoint) places an order with a proof (orders exchanges it for a
// transaction token: billing invoices it); the same proof again is 401, and
// the same token as Bearer is 401.
func TestDPoPOrderEndToEnd(t *testing.T) {
	setup(t)
	k := authztest.NewDPoPKey(t)
	tokenURL := api.BaseURL("devtenant") + "/oauth/token"
	form := url.Values{"grant_type": {"password"}, "username": {apiclient.Bob}, "password": {apiclient.Password},
		"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "scope": {"openid create:orders read:orders read:invoices"}}
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", k.Proof(t, http.MethodPost, tokenURL, ""))
	resp, err := api.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || tr.TokenType != "DPoP" {
		t.Fatalf("DPoP token: %d %+v %v", resp.StatusCode, tr.TokenType, err)
	}
	tok := tr.AccessToken

	ordersURL := api.BaseURL("orders") + "/v1/orders"
	proof := k.Proof(t, http.MethodPost, ordersURL, tok)
	dpop := []string{"Authorization", "DPoP " + tok, "DPoP", proof}
	var o apiclient.Order
	if err := tryPlace("", apiclient.Mugs(1), &o, dpop, http.StatusCreated); err != nil {
		t.Fatalf("order with a DPoP-bound token and its proof: %v", err)
	}
	// The invoice appears: orders exchanged the bound token for a
	// transaction token, which billing's consumer accepted.
	api.WaitInvoice(t, api.Token(t, apiclient.Bob), o.ID, "open", apiclient.FlowDeadline)

	for name, hdr := range map[string][]string{
		"the same proof again":     dpop,
		"the same token as Bearer": {"Authorization", "Bearer " + tok},
		"no proof":                 {"Authorization", "DPoP " + tok},
	} {
		r, err := api.TryCall(http.MethodPost, "orders", "/v1/orders", "", apiclient.Mugs(1), hdr...)
		if err != nil {
			t.Fatal(err)
		}
		if ch := r.Header.Values("WWW-Authenticate"); r.Status != http.StatusUnauthorized || len(ch) != 2 || !strings.HasPrefix(ch[1], "DPoP ") {
			t.Errorf("%s: %s (WWW-Authenticate %q), want 401 with a DPoP challenge", name, r, ch)
		}
	}
}
