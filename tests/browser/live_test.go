package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestLiveUpdates drives the SPA's live updates (web/live.js over web/nats.js,
// through nats-server's WebSocket listener and the auth callout) in real
// Chromium against the whole local stack, as `make run` starts it:
//   - alice places an order in tab A, which shows it pending; in tab B of the
//     same browser she logs in again and pays its invoice; tab A's orders
//     list and detail card turn "paid" with no reload and no polling: over
//     that whole time tab A makes no HTTP request to the services but the
//     one read of a new invoice's amount the app may do, and the update is
//     seen on its WebSocket;
//   - bob, logged in meanwhile in his own browser, is live (the indicator is
//     on, his own order's updates reach his socket), receives none of
//     alice's updates, and subscribing to her subjects with his token is a
//     permissions violation.
//
// Every step leaves a screenshot in testdata/screenshots (live-*.png).
func TestLiveUpdates(t *testing.T) {
	ctx, exe, shots := onStack(t)

	// bob first, so his socket is up for the whole of alice's story.
	bobCtx := browser(t, ctx, exe)
	bobNet := recordTraffic(t, bobCtx)
	bob := &stepper{t: t, ctx: bobCtx, dir: shots, who: "live-bob"}
	bob.login("bob@authmesh.dev")
	bob.do("live-on", 20*time.Second, waitLive())
	bobUID := liveUID(evalAsync[string](bob, `import("/auth.js").then((a) => a.current().claims.sub)`))

	// alice, tab A: her orders view, then an order from the shop.
	aCtx := browser(t, ctx, exe)
	aNet := recordTraffic(t, aCtx)
	alice := &stepper{t: t, ctx: aCtx, dir: shots, who: "live-alice-a"}
	alice.login("alice@authmesh.dev")
	aliceUID := liveUID(evalAsync[string](alice, `import("/auth.js").then((a) => a.current().claims.sub)`))
	alice.do("orders-view", 20*time.Second,
		waitLive(),
		click(`#tab-orders`),
		waitJS(`document.getElementById("orders-list").dataset.state === "loaded"`),
	)
	placeOrder(alice, "order-placed")
	orderID := alice.text(`#detail-order-id`)
	if orderID == "" {
		t.Fatal("alice: the placed order shows no id")
	}
	aRow := fmt.Sprintf(`#orders-list tr[data-order-id=%q]`, orderID)
	alice.do("order-pending", 20*time.Second,
		visible(`#view-orders`),
		visible(aRow+`[data-status="pending"] [data-testid="invoice-status"][data-status="open"]`),
		visible(`#detail-order-status[data-status="pending"]`),
		waitJS(`document.getElementById("detail-invoice-id").textContent !== ""`),
	)
	invoiceID := alice.text(`#detail-invoice-id`)

	// From here until the quiet time after "paid", tab A must not load a
	// page or poll. A reload would also drop this marker.
	eval[bool](alice, `(window.liveTestMark = "still-here", true)`)
	mark := aNet.mark()

	// bob's socket works: his own order's update reaches it. And his token
	// cannot subscribe to alice's subjects; the server says so, and the
	// connection stays up.
	bobOrder := placeOrderAPI(t, passwordToken(t, "bob@authmesh.dev"))
	bobNet.waitMsg(t, "bob's own order update", 20*time.Second, func(m wsMsg) bool {
		return m.subject == fmt.Sprintf("authmesh.live.%s.orders.%s", bobUID, bobOrder)
	})
	forbidden := []string{
		fmt.Sprintf("authmesh.live.%s.orders.>", aliceUID),
		"authmesh.live.*.invoices.>",
	}
	evalAsync[bool](bob, fmt.Sprintf(probeJS, forbidden[0], forbidden[1]))
	bob.do("probe-refused", 20*time.Second,
		waitJS(`window.probe.errors.filter((e) => e.code === "permissions_violation").length === 2 && window.probe.conn.state === "connected"`),
	)
	// bob's token is DPoP-bound (the SPA's default): without its proof at
	// CONNECT it is refused like any stolen token.
	bob.do("bound-token-as-bearer-refused", 20*time.Second,
		waitJS(`window.probe.bearerErrors.includes("authorization_violation") && window.probe.bearer.state !== "connected"`),
	)
	evalAsync[bool](bob, `(async () => { window.probe.bearer.close(); return true; })()`)
	if got := eval[[]string](bob, `window.probe.errors.map((e) => e.subject)`); !sameSet(got, forbidden) {
		t.Errorf("bob: permissions violations for %v, want %v", got, forbidden)
	}

	// alice, tab B: same browser, a new tab, so a new in-memory session.
	bCtx, cancelB := chromedp.NewContext(aCtx)
	t.Cleanup(cancelB)
	if err := chromedp.Do(bCtx); err != nil {
		t.Fatalf("open tab B: %v", err)
	}
	aliceB := &stepper{t: t, ctx: bCtx, dir: shots, who: "live-alice-b"}
	aliceB.login("alice@authmesh.dev")
	bRow := fmt.Sprintf(`#orders-list tr[data-order-id=%q]`, orderID)
	aliceB.do("paid", 30*time.Second,
		click(`#tab-orders`),
		waitJS(`document.getElementById("orders-list").dataset.state === "loaded"`),
		click(bRow+` button[data-action="pay"]`),
		visible(bRow+` [data-testid="invoice-status"][data-status="paid"]`),
	)

	// Tab A follows, by itself.
	alice.do("paid-live", 20*time.Second,
		visible(aRow+`[data-status="paid"] [data-testid="invoice-status"][data-status="paid"]`),
		visible(`#detail-order-status[data-status="paid"]`),
		visible(`#detail-invoice-status[data-status="paid"]`),
		// The notice about the order follows too: it said the invoice
		// was open.
		waitJS(fmt.Sprintf(`document.getElementById("notice-detail").textContent === "Order %s is paid."`, orderID)),
	)
	// Quiet time: a poll of a few seconds' period would show up here.
	time.Sleep(3 * time.Second)
	if got := eval[string](alice, `String(window.liveTestMark)`); got != "still-here" {
		t.Errorf("alice: tab A was reloaded while waiting for the payment (marker %q)", got)
	}
	if !eval[bool](alice, fmt.Sprintf(`!!document.querySelector('%s[data-status="paid"]')`, aRow)) {
		t.Errorf("alice: tab A no longer shows order %s paid after the quiet time", orderID)
	}

	// No reload, no polling: tab A's requests since the mark.
	allowed := "http://localhost:8403/v1/invoices?order_id=" + url.QueryEscape(orderID)
	seen := map[string]int{}
	for _, r := range aNet.requestsSince(mark) {
		if r.kind == network.ResourceTypeDocument {
			t.Errorf("alice: tab A loaded a page while waiting: %s %s", r.method, r.url)
		}
		if r.method == http.MethodGet && isServiceURL(r.url) {
			seen[r.url]++
		}
	}
	t.Logf("alice: tab A's service GETs while waiting: %v", seen)
	for u, n := range seen {
		switch {
		case u != allowed:
			t.Errorf("alice: tab A sent GET %s (%d×) while waiting for the payment; the live update alone must show it", u, n)
		case n > 1:
			t.Errorf("alice: tab A sent GET %s %d times while waiting: polling (the app reads a new invoice once)", u, n)
		}
	}

	// The change came over tab A's socket, as order and invoice updates.
	for _, want := range []struct{ subject, status string }{
		{fmt.Sprintf("authmesh.live.%s.invoices.%s", aliceUID, invoiceID), "paid"},
		{fmt.Sprintf("authmesh.live.%s.orders.%s", aliceUID, orderID), "paid"},
	} {
		if !slices.ContainsFunc(aNet.msgs(), func(m wsMsg) bool {
			return m.subject == want.subject && bytes.Contains(m.payload, []byte(`"status":"`+want.status+`"`))
		}) {
			t.Errorf("alice: tab A's socket received no %s update on %s", want.status, want.subject)
		}
	}

	// bob got none of it, on the app's connection or the probe's.
	bob.do("still-live", 10*time.Second, waitLive())
	for _, m := range bobNet.msgs() {
		if strings.HasPrefix(m.subject, "authmesh.live."+aliceUID+".") || bytes.Contains(m.payload, []byte(orderID)) {
			t.Errorf("bob: his socket received alice's update %s %s", m.subject, m.payload)
		}
		if !strings.HasPrefix(m.subject, "authmesh.live."+bobUID+".") {
			t.Errorf("bob: his socket received %s, which is not his", m.subject)
		}
	}
	if n := eval[int](bob, `window.probe.msgs.length`); n != 0 {
		t.Errorf("bob: the probe subscribed to alice's subjects received %d messages", n)
	}
	if eval[bool](bob, fmt.Sprintf(`!!document.querySelector('#orders-list tr[data-order-id=%q]')`, orderID)) {
		t.Errorf("bob: his page shows alice's order %s", orderID)
	}
}

// waitLive waits for the top bar's live indicator to say the connection is up.
func waitLive() chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		visible(`#live[data-state="connected"]`),
		waitJS(`document.getElementById("live-label").textContent === "live" && !document.getElementById("live").dataset.error`),
	)
}

// evalAsync evaluates a JavaScript expression in the page and waits for the
// promise it returns.
func evalAsync[T any](s *stepper, expr string) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		s.t.Fatalf("%s: evaluate %s: %v", s.who, expr, err)
	}
	return v
}

// probeJS opens a second live connection with the page's own token
// (auth.js's session; a DPoP-bound one with its CONNECT proof, as the app
// does) and subscribes to the two subjects; window.probe collects its
// errors and messages.
const probeJS = `(async (a, b) => {
  const { connect } = await import("/nats.js");
  const auth = await import("/auth.js");
  const dpop = await import("/dpop.js");
  const live = await import("/live.js");
  const { config } = await import("/config.js");
  const probe = { errors: [], msgs: [] };
  const proveConnect = (info, token) => auth.current()?.tokenType === "DPoP"
    ? dpop.proof({ ...live.connectProof, accessToken: token, nonce: info.nonce || "" }) : "";
  probe.conn = connect({ url: config.nats, name: "live-test-probe", getToken: () => auth.current()?.accessToken || "", proveConnect });
  probe.conn.addEventListener("error", (e) => probe.errors.push({ code: e.detail.code, subject: e.detail.subject }));
  for (const s of [a, b]) probe.conn.subscribe(s, (m) => probe.msgs.push(m.subject));
  // The same bound token as a bearer token (no CONNECT proof): refused.
  probe.bearerErrors = [];
  probe.bearer = connect({ url: config.nats, name: "live-test-bearer", getToken: () => auth.current()?.accessToken || "" });
  probe.bearer.addEventListener("error", (e) => probe.bearerErrors.push(e.detail.code));
  window.probe = probe;
  return true;
})(%q, %q)`

// liveUID is the user's token in live subjects: base64url, unpadded, of the
// sub (mesh.LiveUID).
func liveUID(sub string) string {
	if sub == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(sub))
}

func isServiceURL(u string) bool {
	for _, p := range []string{"http://localhost:8401/", "http://localhost:8402/", "http://localhost:8403/"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// placeOrderAPI places a one-mug order with token, as a CLI would, and
// returns its id.
func placeOrderAPI(t *testing.T, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://localhost:8402/v1/orders", strings.NewReader(`{"items":[{"sku":"mug","quantity":1}]}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "live-test-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var order struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&order); err != nil || resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK || order.ID == "" {
		t.Fatalf("POST /v1/orders: status %d, %v", resp.StatusCode, err)
	}
	return order.ID
}

// traffic records a tab's network requests and the WebSocket frames it
// receives, from the DevTools protocol's network events: what the page
// really sent and got, with nothing injected into it.
type traffic struct {
	mu       sync.Mutex
	requests []netRequest
	streams  map[network.RequestID][]byte // received WebSocket bytes, per socket
}

type netRequest struct {
	method, url string
	kind        network.ResourceType
}

// wsMsg is one NATS MSG or HMSG a socket received.
type wsMsg struct {
	subject string
	payload []byte
}

// recordTraffic starts recording the tab of ctx (which must have run once).
func recordTraffic(t *testing.T, ctx context.Context) *traffic {
	t.Helper()
	tr := &traffic{streams: map[network.RequestID][]byte{}}
	if err := chromedp.Listen(ctx, tr.add); err != nil {
		t.Fatal(err)
	}
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{})
		return err
	}))
	if err != nil {
		t.Fatalf("enable network events: %v", err)
	}
	return tr
}

// add is the listener: it runs on the tab's reader goroutine and must not block.
func (tr *traffic) add(ev any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		if e.Request != nil {
			u := e.Request.URL
			if e.Request.URLFragment != "" {
				u += e.Request.URLFragment
			}
			tr.requests = append(tr.requests, netRequest{method: e.Request.Method, url: u, kind: e.Type})
		}
	case *network.EventWebSocketFrameReceived:
		if e.Response != nil {
			tr.streams[e.RequestID] = append(tr.streams[e.RequestID], e.Response.PayloadData...)
		}
	}
}

// mark is the position of the next request.
func (tr *traffic) mark() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.requests)
}

func (tr *traffic) requestsSince(mark int) []netRequest {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.requests[mark:])
}

// msgs parses the NATS messages out of every socket's received bytes.
func (tr *traffic) msgs() []wsMsg {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []wsMsg
	for _, s := range tr.streams {
		out = append(out, natsMsgs(s)...)
	}
	return out
}

// waitMsg waits until a received message matches.
func (tr *traffic) waitMsg(t *testing.T, what string, within time.Duration, match func(wsMsg) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !slices.ContainsFunc(tr.msgs(), match) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not received within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// natsMsgs reads the MSG and HMSG operations (with payload; for HMSG the
// headers and payload together) of a NATS server-to-client byte stream. An
// incomplete last message is left out; other operations are skipped.
func natsMsgs(stream []byte) []wsMsg {
	var out []wsMsg
	for len(stream) > 0 {
		eol := bytes.Index(stream, []byte("\r\n"))
		if eol < 0 {
			return out
		}
		fields := strings.Fields(string(stream[:eol]))
		stream = stream[eol+2:]
		if len(fields) < 3 || (fields[0] != "MSG" && fields[0] != "HMSG") {
			continue
		}
		size, err := strconv.Atoi(fields[len(fields)-1])
		if err != nil || size < 0 || len(stream) < size+2 {
			return out
		}
		out = append(out, wsMsg{subject: fields[1], payload: stream[:size]})
		stream = stream[size+2:]
	}
	return out
}

// TestNATSMsgs checks the test's own reading of a socket's byte stream, which
// the live test's "received"/"never received" assertions rest on.
func TestNATSMsgs(t *testing.T) {
	t.Parallel()
	stream := "INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG a.b 1 2\r\nhi\r\n-ERR 'Permissions Violation for Subscription to \"a.>\"'\r\n" +
		"HMSG c.d 2 _INBOX.r 12 14\r\nNATS/1.0\r\n\r\nok\r\nMSG e 3 5\r\nMSG x\r\nMSG f 4 10\r\nshort"
	got := natsMsgs([]byte(stream))
	want := []wsMsg{{"a.b", []byte("hi")}, {"c.d", []byte("NATS/1.0\r\n\r\nok")}, {"e", []byte("MSG x")}}
	if !slices.EqualFunc(got, want, func(a, b wsMsg) bool { return a.subject == b.subject && bytes.Equal(a.payload, b.payload) }) {
		t.Errorf("natsMsgs = %q, want %q", got, want)
	}
}
