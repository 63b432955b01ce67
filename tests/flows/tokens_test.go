package flows

import (
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// jwsPattern finds compact JWS strings (header.payload.signature, the header
// a base64url JSON object) anywhere in a byte stream.
var jwsPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`)

// TestNoReplayableTokenAtRest runs the contract's five flows, then reads every
// byte JetStream keeps on disk — every stream, dead-letter stream and KV
// bucket — and presents every token found there to every HTTP service. None
// may be accepted: what crosses NATS and what JetStream stores are transaction
// tokens, which no edge takes, never the callers' access tokens nor the
// services' own M2M tokens (docs/contract.md §7).
func TestNoReplayableTokenAtRest(t *testing.T) {
	setup(t)
	customer, admin := api.Token(t, apiclient.Bob), api.Token(t, apiclient.Carol)
	who := api.Whoami(t, customer)

	// 1 order → invoice; 2 pay; 4 refund.
	paid := api.PlaceOrder(t, customer, apiclient.Mugs(1))
	inv := api.WaitInvoice(t, customer, paid.ID, "open", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", customer, nil, http.StatusOK, nil)
	api.WaitOrder(t, customer, paid.ID, "paid", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/refund", admin, nil, http.StatusOK, nil)
	api.WaitOrder(t, customer, paid.ID, "refunded", apiclient.FlowDeadline)
	// 3 cancel.
	cancelled := api.PlaceOrder(t, customer, apiclient.Mugs(2))
	api.WaitInvoice(t, customer, cancelled.ID, "open", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "orders", "/v1/orders/"+cancelled.ID+"/cancel", customer, nil, http.StatusOK, nil)
	api.WaitInvoice(t, customer, cancelled.ID, "void", apiclient.FlowDeadline)
	// 5 block (cancels a pending order under orders' own identity) and unblock.
	pending := api.PlaceOrder(t, customer, apiclient.Mugs(3))
	api.WaitInvoice(t, customer, pending.ID, "open", apiclient.FlowDeadline)
	blockPath := "/v1/users/" + url.PathEscape(who.UserID)
	api.CallJSON(t, http.MethodPost, "users", blockPath+"/block", admin, nil, http.StatusOK, nil)
	t.Cleanup(func() { _, _ = api.TryCall(http.MethodPost, "users", blockPath+"/unblock", admin, nil) })
	api.WaitOrder(t, admin, pending.ID, "cancelled", apiclient.FlowDeadline)
	api.WaitInvoice(t, admin, pending.ID, "void", apiclient.FlowDeadline, who.UserID)
	api.CallJSON(t, http.MethodPost, "users", blockPath+"/unblock", admin, nil, http.StatusOK, nil)

	found := map[string]string{} // token → file it was found in
	err := filepath.WalkDir(stack.natsStore, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range jwsPattern.FindAll(b, -1) {
			found[string(m)] = strings.TrimPrefix(path, stack.natsStore)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the JetStream store: %v", err)
	}
	// The flows above put transaction tokens in ORDERS_EVENTS,
	// BILLING_EVENTS and USERS_EVENTS: finding none means the scan is blind.
	if len(found) == 0 {
		t.Fatal("no token at all in the JetStream store: the scan found nothing, so it proves nothing")
	}
	routes := []struct{ svc, path string }{{"users", "/v1/me"}, {"orders", "/v1/orders"}, {"billing", "/v1/invoices"}}
	for tok, file := range found {
		if typ := headerTyp(tok); typ != "txntoken+jwt" {
			t.Errorf("%s holds a token of typ %q, not a transaction token", file, typ)
		}
		for _, rt := range routes {
			if r := api.Call(t, http.MethodGet, rt.svc, rt.path, tok, nil); r.Status != http.StatusUnauthorized {
				t.Errorf("%s: a token stored in %s was accepted by %s %s (status %d)", rt.svc, file, rt.svc, rt.path, r.Status)
			}
		}
	}
	t.Logf("%d distinct tokens at rest, all transaction tokens, none accepted by an HTTP edge", len(found))
}

func headerTyp(tok string) string {
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		Typ string `json:"typ"`
	}
	_ = json.Unmarshal(b, &hdr)
	return hdr.Typ
}
