package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestModules checks the SPA's own logic (PKCE, claims decoding, error
// messages) inside Chromium, where it runs, with no stack: web/ is served by
// an httptest server and each case imports the modules and evaluates one
// expression.
func TestModules(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tab := modulesPage(t, ctx)

	// A JWT whose payload is {"sub":"auth0|1","permissions":["read:orders"]}
	// (signature irrelevant: the page only reads claims for display).
	const jwt = `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdXRoMHwxIiwicGVybWlzc2lvbnMiOlsicmVhZDpvcmRlcnMiXX0.c2ln`

	tests := []struct {
		name string
		expr string // evaluated with a = auth.js and api = api.js in scope
		want string // JSON of the result
	}{
		{"PKCE verifier encoding matches RFC 7636 appendix B",
			`a.base64url(new Uint8Array([116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]))`,
			`"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"`},
		{"PKCE S256 challenge matches RFC 7636 appendix B",
			`a.pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")`,
			`"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"`},
		{"base64url has no padding or +/",
			`a.base64url(new Uint8Array([251, 255, 191]))`,
			`"-_-_"`},
		{"claims decode",
			`a.decodeClaims("` + jwt + `").permissions`,
			`["read:orders"]`},
		{"garbage claims decode to nothing",
			`a.decodeClaims("not.a-jwt!")`,
			`{}`},
		{"422 field map",
			`api.fieldErrors({error: "validation_failed", message: "invalid", fields: {"items[0].quantity": "must be between 1 and 100"}})`,
			`[{"field":"items[0].quantity","message":"must be between 1 and 100"}]`},
		{"422 field list",
			`api.fieldErrors({errors: [{field: "country", message: "unknown"}, "general"]})`,
			`[{"field":"country","message":"unknown"},{"field":"","message":"general"}]`},
		{"no fields",
			`api.fieldErrors({error: "conflict", message: "already paid"})`,
			`[]`},
		{"list unwraps users page",
			`api.list({users: [{user_id: "u1"}], page: 0, total: 1}, "users").length`,
			`1`},
		{"list of bare array",
			`api.list([1, 2, 3], "orders").length`,
			`3`},
		{"401 asks to log in again",
			`(({title, login}) => ({title, login}))(api.describe(new api.ApiError({status: 401, code: "invalid_token", message: "token revoked", service: "orders"})))`,
			`{"title":"Please log in again (401)","login":true}`},
		{"403 keeps the service's message",
			`api.describe(new api.ApiError({status: 403, code: "insufficient_scope", message: "requires [refund:invoices]", service: "billing"})).detail`,
			`"requires [refund:invoices]"`},
		{"404 explains ownership",
			`api.describe(new api.ApiError({status: 404, code: "not_found", message: "", service: "orders"})).detail`,
			`"It does not exist, or it is not yours to see."`},
		{"409 is a warning",
			`(({kind, title, detail}) => ({kind, title, detail}))(api.describe(new api.ApiError({status: 409, code: "conflict", message: "invoice is paid", service: "billing"})))`,
			`{"kind":"warning","title":"Conflict (409)","detail":"invoice is paid"}`},
		{"422 carries fields",
			`api.describe(new api.ApiError({status: 422, code: "validation_failed", message: "invalid", fields: [{field: "sku", message: "unknown"}], service: "orders"})).fields`,
			`[{"field":"sku","message":"unknown"}]`},
		{"503 names the service and the wait",
			`(({title, detail}) => ({title, detail}))(api.describe(new api.ApiError({status: 503, code: "keys_unavailable", message: "signing keys unavailable.", service: "users", retryAfter: "5"})))`,
			`{"title":"The users service is not ready (503)","detail":"signing keys unavailable. Try again in 5 s."}`},
		{"unreachable service",
			`api.describe(new api.ApiError({status: 0, code: "network_error", message: "Could not reach", service: "orders"})).title`,
			`"Service unreachable"`},
		{"tenant errors ask to log in",
			`(({title, login}) => ({title, login}))(api.describe(new a.AuthError("access_denied", "user is blocked", 401)))`,
			`{"title":"Login failed","login":true}`},
		{"no session, no refresh",
			`a.refresh().then(() => "refreshed", (e) => e.code)`,
			`"login_required"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expr := fmt.Sprintf(`(async () => { const a = await import("/auth.js"); const api = await import("/api.js"); return JSON.stringify(await (%s)); })()`, tc.expr)
			c, cancel := context.WithTimeout(tab, 10*time.Second)
			defer cancel()
			got, err := chromedp.Run(c, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatalf("evaluate %s: %v", tc.expr, err)
			}
			if !jsonEqual(t, got, tc.want) {
				t.Errorf("%s\n got %s\nwant %s", tc.expr, got, tc.want)
			}
		})
	}
}

// modulesPage starts a Chromium of its own on a blank page of an httptest
// server that serves web/, where expressions can import the SPA's modules.
// Module state (a session, a DPoP key) lives as long as the page.
func modulesPage(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	root := repoRoot(t)

	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(root, "web"))))
	mux.HandleFunc("/blank.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>modules</title>")
	})
	srv := httptest.NewServer(mux) // 127.0.0.1: a secure context, as PKCE and WebCrypto need
	t.Cleanup(srv.Close)

	tab := browser(t, ctx, exe)
	navCtx, navCancel := context.WithTimeout(tab, 20*time.Second)
	defer navCancel()
	if err := chromedp.Do(navCtx, chromedp.Navigate(srv.URL+"/blank.html")); err != nil {
		t.Fatal(err)
	}
	return tab
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("result %q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("want %q is not JSON: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
