package flows

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// serviceClients are the M2M clients of the services in deploy/tenant.yaml,
// with their secrets from deploy/dev/client-secrets.yaml (read below, so a
// renamed client fails here rather than passing vacuously).
var serviceClients = []string{"users-service", "orders-service", "billing-service"}

// clientCredentials asks devtenant for a client's M2M token with every
// scope the tenant grants it (Auth0 gives the whole grant when no scope is
// asked for).
func clientCredentials(t *testing.T, client, secret string) string {
	t.Helper()
	resp, err := httpClient.PostForm(stack.tenantURL+"oauth/token", url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {client},
		"client_secret": {secret},
		"audience":      {apiclient.Audience},
	})
	if err != nil {
		t.Fatalf("token for %s: %v", client, err)
	}
	defer resp.Body.Close()
	var r struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("token for %s: status %d: %v", client, resp.StatusCode, err)
	}
	if r.Scope == "" {
		t.Fatalf("%s's token has no scope: the tenant grants it nothing, so the test would prove nothing", client)
	}
	return r.AccessToken
}

// TestServiceTokensRefusedOnUserRoutes: an M2M token of each service — which
// anyone who owns that service process holds, and which used to travel in
// events — gets 403 insufficient_scope, error_description="users_only", on
// every route of every service, including the ones its client's grant has
// the permission for (billing-service and refund, users-service and block),
// and nothing happens.
func TestServiceTokensRefusedOnUserRoutes(t *testing.T) {
	setup(t)
	raw, err := os.ReadFile(filepath.Join(stack.root, "deploy", "dev", "client-secrets.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var secrets struct {
		ClientSecrets map[string]string `yaml:"client_secrets"`
	}
	if err := yaml.Unmarshal(raw, &secrets); err != nil {
		t.Fatal(err)
	}

	cust, admin := api.Token(t, apiclient.Alice), api.Token(t, apiclient.Carol)
	who := api.Whoami(t, cust)
	paid := api.PlaceOrder(t, cust, apiclient.Mugs(1))
	inv := api.WaitInvoice(t, cust, paid.ID, "open", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", cust, nil, http.StatusOK, nil)
	pending := api.PlaceOrder(t, cust, apiclient.Mugs(2))
	user := "/v1/users/" + url.PathEscape(who.UserID)

	routes := []struct {
		svc, method, path string
		body              any
	}{
		{"users", http.MethodGet, "/v1/me", nil},
		{"users", http.MethodPatch, "/v1/me", map[string]string{"name": "mallory"}},
		{"users", http.MethodGet, "/v1/users", nil},
		{"users", http.MethodGet, user, nil},
		{"users", http.MethodPost, user + "/block", nil},
		{"users", http.MethodPost, user + "/unblock", nil},
		{"users", http.MethodPut, user + "/roles", map[string][]string{"roles": {"admin"}}},
		{"orders", http.MethodPost, "/v1/orders", apiclient.Mugs(1)},
		{"orders", http.MethodGet, "/v1/orders", nil},
		{"orders", http.MethodGet, "/v1/orders/" + pending.ID, nil},
		{"orders", http.MethodPost, "/v1/orders/" + pending.ID + "/cancel", nil},
		{"billing", http.MethodGet, "/v1/invoices", nil},
		{"billing", http.MethodGet, "/v1/invoices/" + inv.ID, nil},
		{"billing", http.MethodPost, "/v1/invoices/" + inv.ID + "/pay", nil},
		{"billing", http.MethodPost, "/v1/invoices/" + inv.ID + "/refund", nil},
	}
	for _, client := range serviceClients {
		secret, ok := secrets.ClientSecrets[client]
		if !ok {
			t.Fatalf("deploy/dev/client-secrets.yaml has no secret for %s", client)
		}
		tok := clientCredentials(t, client, secret)
		for _, rt := range routes {
			t.Run(client+" "+rt.method+" "+rt.svc+" "+rt.path, func(t *testing.T) {
				r := api.Call(t, rt.method, rt.svc, rt.path, tok, rt.body)
				want := `Bearer realm="authmesh", error="insufficient_scope", error_description="users_only"`
				if r.Status != http.StatusForbidden || r.Header.Get("WWW-Authenticate") != want {
					t.Fatalf("got %s, WWW-Authenticate %q; want 403 with %q", r, r.Header.Get("WWW-Authenticate"), want)
				}
				var body struct{ Error, Message string }
				if err := json.Unmarshal(r.Body, &body); err != nil || body.Error != "insufficient_scope" || body.Message == "" {
					t.Fatalf("body %s, want error insufficient_scope and a message", r.Body)
				}
				if strings.Contains(string(r.Body), tok) {
					t.Fatal("the answer echoes the token")
				}
			})
		}
	}

	// Nothing happened: alice still gets tokens and keeps her role and
	// name, the paid invoice was not refunded, the pending order stands.
	if r := api.PasswordGrant(t, apiclient.Alice); r.Status != http.StatusOK {
		t.Errorf("alice after the service tokens' attempts: token grant %d %s", r.Status, r.Description)
	}
	var m struct {
		Name  string   `json:"name"`
		Roles []string `json:"roles"`
	}
	api.CallJSON(t, http.MethodGet, "users", "/v1/me", api.Token(t, apiclient.Alice), nil, http.StatusOK, &m)
	if m.Name == "mallory" || strings.Contains(strings.Join(m.Roles, " "), "admin") {
		t.Errorf("alice after the service tokens' attempts: %+v", m)
	}
	if got := api.GetInvoice(t, cust, inv.ID); got.Status != "paid" {
		t.Errorf("invoice after billing-service's refund attempt: %q, want paid", got.Status)
	}
	if got := api.GetOrder(t, admin, pending.ID); got.Status != "pending" {
		t.Errorf("order after the service tokens' cancel attempts: %q, want pending", got.Status)
	}
}
