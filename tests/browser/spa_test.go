package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestSPA drives the web app in real headless Chromium against the whole local
// stack, as `make run` starts it:
//   - alice logs in through the tenant's form (authorization code + PKCE),
//     has an invalid order refused with the service's 422, orders, sees the
//     invoice appear, pays it and sees the order paid, refreshes her session
//     (rotation), finds nothing in web storage, and is signed out by a reload;
//   - bob neither lists nor opens alice's order (404);
//   - dave (support) sees it, and is offered neither refund nor block;
//   - carol (admin) refunds it from the support view; the order follows;
//     she blocks bob, whose existing token every service then refuses, and
//     unblocks him: a fresh token works again, the old one stays refused.
//
// Every step leaves a screenshot in testdata/screenshots (with the stack's
// log); the paid order is web/screenshot.png for the README.
func TestSPA(t *testing.T) {
	ctx, exe, shots := onStack(t)

	// alice -----------------------------------------------------------------
	alice := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "alice"}
	alice.login("alice@authmesh.dev")

	// The service validates (quantity 1–100); the page shows its 422 and
	// marks the input it names.
	alice.do("order-rejected-422", 30*time.Second, orderMugs("101",
		visible(`#notice[data-kind="error"]`),
		waitJS(`document.getElementById("notice-title").textContent.includes("422")`),
		visible(`#notice-fields li`),
		visible(`#qty-mug[aria-invalid="true"]`),
	)...)

	alice.do("order-placed-invoice-open", 30*time.Second,
		setValue(`#qty-mug`, "2"),
		setValue(`#qty-tea-green`, "1"),
		click(`#place-order`),
		// The invoice comes from billing, through the order event.
		visible(`#detail-invoice-status[data-status="open"]`),
	)
	orderID := alice.text(`#detail-order-id`)
	if orderID == "" {
		t.Fatal("alice: the placed order shows no id")
	}
	// 2 × mug (1200) + 1 × tea-green (450), priced by the catalog.
	if total := alice.text(`#detail-order-total`); !strings.Contains(total, "28.50") && !strings.Contains(total, "28,50") {
		t.Errorf("alice: order total = %q, want 28.50 EUR", total)
	}

	alice.do("order-paid", 30*time.Second,
		click(`#pay-invoice`),
		visible(`#detail-order-status[data-status="paid"]`),
		visible(`#detail-invoice-status[data-status="paid"]`),
		waitJS(fmt.Sprintf(`!!document.querySelector('#orders-list tr[data-order-id=%q][data-status="paid"]')`, orderID)),
	)
	updateReadmeScreenshot(t, filepath.Join(shots, fmt.Sprintf("alice-%02d-order-paid.png", alice.n)), filepath.Join(repoRoot(t), "web", "screenshot.png"))

	// A refresh rotates the refresh token; the new access token must work.
	alice.do("session-refreshed", 30*time.Second,
		click(`#refresh`),
		waitJS(`document.getElementById("profile-session").dataset.refreshCount === "1"`),
		click(`#orders-reload`),
		waitJS(fmt.Sprintf(`document.getElementById("orders-list").dataset.state === "loaded" && !!document.querySelector('#orders-list tr[data-order-id=%q]')`, orderID)),
	)
	if n := eval[int](alice, `localStorage.length + sessionStorage.length`); n != 0 {
		t.Errorf("alice: %d items in web storage after login; tokens must stay in memory", n)
	}
	// Memory only: a reload ends the session.
	alice.do("reloaded-signed-out", 20*time.Second,
		chromedp.Reload(),
		visible(`#signed-out`),
	)

	// bob -------------------------------------------------------------------
	bob := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "bob"}
	bob.login("bob@authmesh.dev")
	bob.do("own-orders", 20*time.Second,
		click(`#tab-orders`),
		waitJS(`document.getElementById("orders-list").dataset.state === "loaded"`),
	)
	if eval[bool](bob, fmt.Sprintf(`!!document.querySelector('#orders-list tr[data-order-id=%q]')`, orderID)) {
		t.Errorf("bob: his order list shows alice's order %s", orderID)
	}
	bob.do("alice-order-not-found", 20*time.Second,
		setValue(`#lookup-id`, orderID),
		click(`#lookup-submit`),
		visible(`#lookup-result[data-status="404"]`),
	)
	if result := bob.text(`#lookup-result`); !strings.Contains(result, "404") || !strings.Contains(result, orderID) {
		t.Errorf("bob: lookup of alice's order says %q, want a 404 message naming it", result)
	}
	if eval[bool](bob, `!document.getElementById("order-detail").hidden`) {
		t.Errorf("bob: the order detail card is shown after a 404")
	}
	bob.do("logged-out", 20*time.Second,
		click(`#logout`),
		visible(`#signed-out`),
	)

	// dave (support) --------------------------------------------------------
	dave := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "dave"}
	dave.login("dave@authmesh.dev")
	daveOrderRow := fmt.Sprintf(`#admin-orders tr[data-order-id=%q]`, orderID)
	dave.do("support-alice-orders", 20*time.Second,
		click(`#tab-admin`),
		visible(`#users-list tr[data-email="alice@authmesh.dev"]`),
		click(`#users-list tr[data-email="alice@authmesh.dev"] button[data-action="orders"]`),
		visible(daveOrderRow+`[data-status="paid"]`),
	)
	// Support reads everything but may neither refund nor block.
	if eval[bool](dave, `!!document.querySelector('#admin-orders button[data-action="refund"], #users-list button[data-action="block"]')`) {
		t.Errorf("dave: the support view offers refund or block, which support may not do")
	}

	// carol (admin) ---------------------------------------------------------
	carol := &stepper{t: t, ctx: browser(t, ctx, exe), dir: shots, who: "carol"}
	carol.login("carol@authmesh.dev")
	aliceRow := `#users-list tr[data-email="alice@authmesh.dev"]`
	orderRow := fmt.Sprintf(`#admin-orders tr[data-order-id=%q]`, orderID)
	carol.do("support-alice-orders", 20*time.Second,
		click(`#tab-admin`),
		visible(aliceRow),
		click(aliceRow+` button[data-action="orders"]`),
		visible(orderRow+`[data-status="paid"]`),
	)
	carol.do("refunded", 30*time.Second,
		click(orderRow+` button[data-action="refund"]`),
		visible(orderRow+` [data-testid="invoice-status"][data-status="refunded"]`),
		// The order follows its invoice through billing's refunded event;
		// live updates carry only carol's own orders, so she reloads alice's.
		waitJS(fmt.Sprintf(`!!document.querySelector('%s[data-status="refunded"]') || (document.querySelector('%s button[data-action="orders"]').click(), false)`, orderRow, aliceRow)),
	)

	bobToken := passwordToken(t, "bob@authmesh.dev")
	bobRow := `#users-list tr[data-email="bob@authmesh.dev"]`
	eval[bool](carol, `(window.confirm = () => true, true)`) // the page asks before blocking
	carol.do("bob-blocked", 30*time.Second,
		click(bobRow+` button[data-action="block"]`),
		visible(bobRow+`[data-blocked="true"] button[data-action="unblock"]`),
	)
	for _, api := range []string{"http://localhost:8401/v1/me", "http://localhost:8402/v1/orders", "http://localhost:8403/v1/invoices"} {
		if got := statusWithin(api, bobToken, http.StatusUnauthorized, 2*time.Second); got != http.StatusUnauthorized {
			t.Errorf("bob blocked: GET %s with his token answers %d, want 401 within 2 s", api, got)
		}
	}
	carol.do("bob-unblocked", 30*time.Second,
		click(bobRow+` button[data-action="unblock"]`),
		visible(bobRow+`[data-blocked="false"] button[data-action="block"]`),
	)
	if got := statusWithin("http://localhost:8402/v1/orders", passwordToken(t, "bob@authmesh.dev"), http.StatusOK, 2*time.Second); got != http.StatusOK {
		t.Errorf("bob unblocked: a fresh token answers %d, want 200", got)
	}
	if got := statusWithin("http://localhost:8402/v1/orders", bobToken, http.StatusOK, 0); got != http.StatusUnauthorized {
		t.Errorf("bob unblocked: his token from before the block answers %d, want 401", got)
	}
}

// passwordToken gets an access token with the password grant, as a CLI would.
func passwordToken(t *testing.T, email string) string {
	t.Helper()
	resp, err := http.PostForm("http://localhost:8400/oauth/token", url.Values{
		"grant_type": {"password"}, "client_id": {"authmesh-cli"}, "username": {email},
		"password": {"dev-password"}, "audience": {"https://api.authmesh.dev"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("token for %s: status %d, %v", email, resp.StatusCode, err)
	}
	return tok.AccessToken
}

// statusWithin GETs u with token until it answers want or within passes,
// and returns the last status (0 when no answer came).
func statusWithin(u, token string, want int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		status := 0
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		if status == want || !time.Now().Before(deadline) {
			return status
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// updateReadmeScreenshot copies the paid-order screenshot to web/screenshot.png,
// which the README shows. The file is committed, so it is only rewritten
// when missing or when UPDATE_SCREENSHOT=1: a plain test run must not leave
// the working tree dirty with a new order id and date.
func updateReadmeScreenshot(t *testing.T, from, to string) {
	t.Helper()
	if _, err := os.Stat(to); err == nil && os.Getenv("UPDATE_SCREENSHOT") != "1" {
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Errorf("README screenshot: %v", err)
		return
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Errorf("README screenshot: %v", err)
	}
}
