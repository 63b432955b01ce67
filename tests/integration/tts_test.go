package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// ttsOutcome counts the answers to one kind of order request in one phase.
type ttsOutcome map[string]int

func (o ttsOutcome) String() string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, o[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// ordersOf lists the ids of a user's orders (GET /v1/orders as that user).
func ordersOf(t *testing.T, tok string) map[string]bool {
	t.Helper()
	list := api.OrdersOf(t, tok)
	ids := make(map[string]bool, len(list))
	for _, o := range list {
		ids[o.ID] = true
	}
	return ids
}

// checkNATSWithoutCallout runs while the TTS, which answers the NATS auth
// callout, is down: a new connection with a valid client-credentials token
// is refused at CONNECT (nobody can vouch for it), while a connection made
// before keeps working — its user was issued already.
func checkNATSWithoutCallout(t *testing.T, existing *nats.Conn, url, tok string) {
	t.Helper()
	started := time.Now()
	nc, _, err := natsConnect(url, tok, "billing", nats.CustomInboxPrefix("_INBOX_billing"))
	switch {
	case err == nil:
		nc.Close()
		t.Error("with the TTS down, a new NATS connection was authorized: who answered the callout?")
	default:
		// The server refuses when its authorization timeout ends; the client
		// usually reads "Authorization Violation", or sees its handshake
		// fail when the server's close races it. Either way it is not in.
		t.Logf("with the TTS down, a new NATS connection is refused after %v: %v", time.Since(started).Round(time.Millisecond), err)
	}
	var own streamInfo
	if err := jsAPI(existing, "$JS.API.STREAM.INFO.ORDERS_EVENTS", nil, &own); err != nil || own.Error != nil {
		t.Errorf("with the TTS down, orders' existing NATS connection stopped working: %v %+v", err, own.Error)
	}
	if !existing.IsConnected() {
		t.Error("with the TTS down, orders' existing NATS connection is not connected")
	}
}

// testTTSKilled kills the Transaction Token Service (SIGKILL) while clients
// place orders, some with access tokens whose transaction tokens orders has
// cached, some with a fresh access token every time (each needs a new
// exchange; one identical to an earlier login's counts apart), and brings
// it back. While it is down every order answers 503 with Retry-After, never
// 401 or 500, cached transaction tokens or not: each order's event is sealed
// for its own payload, which takes the service. Afterwards every order answered 201 has exactly one
// invoice, and the users have no order beyond those. On NATS, meanwhile, a
// new connection with a valid client token is refused and one made before
// keeps working (checkNATSWithoutCallout); once it is back, the token
// connects again.
func testTTSKilled(t *testing.T) {
	ctx := testCtx(t, 4*time.Minute)
	ensureRunning(t, "tts")
	users := []string{apiclient.Alice, apiclient.Dave}
	cached := map[string]string{}
	before := map[string]map[string]bool{}
	var accepted []placed
	for _, u := range users {
		tok := api.Token(t, u)
		cached[u] = tok
		before[u] = ordersOf(t, tok)
		// Fills orders' exchange cache for this token (profile and event hops).
		accepted = append(accepted, placed{api.PlaceOrder(t, tok, apiclient.Mugs(1)).ID, tok})
	}

	const (
		phaseUp   = "before"
		phaseDown = "down"
		phaseBack = "after"
	)
	var (
		mu       sync.Mutex
		phase    = phaseUp
		outcomes = map[string]ttsOutcome{} // "<kind> <phase>" -> answers
		bad      []string
		// The first 503s of the phases where the TTS is up, with their
		// bodies (the error code says which dependency was missing).
		upRefusals []string
		// Access tokens orders has exchanged (answered 201): devtenant's
		// tokens have no jti, so two logins in the same second get the same
		// token, whose transaction tokens orders then has cached.
		exchanged = map[string]bool{}
	)
	record := func(kind, ph string, r apiclient.Response, err error, tok string) {
		mu.Lock()
		defer mu.Unlock()
		key := kind + " " + ph
		if outcomes[key] == nil {
			outcomes[key] = ttsOutcome{}
		}
		switch {
		case err != nil:
			outcomes[key]["error"]++
			bad = append(bad, fmt.Sprintf("%s: %v", key, err))
		case r.Status == http.StatusCreated:
			outcomes[key]["201"]++
			accepted = append(accepted, placed{jsonField(r.Body, "id"), tok})
			exchanged[tok] = true
		case r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
			outcomes[key]["503"]++
			if (ph == phaseUp || ph == phaseBack) && len(upRefusals) < 5 {
				upRefusals = append(upRefusals, fmt.Sprintf("%s at %s: %s", key, time.Now().UTC().Format("15:04:05.000"), r))
			}
		default:
			outcomes[key][fmt.Sprint(r.Status)]++
			bad = append(bad, fmt.Sprintf("%s: %s (Retry-After %q)", key, r, r.Header.Get("Retry-After")))
		}
	}
	current := func() string { mu.Lock(); defer mu.Unlock(); return phase }

	tctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for w := range 12 {
		u := users[w%len(users)]
		fresh := w%3 == 0 // a third of the clients log in anew for every order
		wg.Go(func() {
			for i := 0; tctx.Err() == nil; i++ {
				ph := current()
				tok, kind := cached[u], "cached"
				if fresh {
					kind = "fresh"
					r, err := api.TokenRequest(url.Values{
						"grant_type": {"password"}, "username": {u}, "password": {apiclient.Password},
						"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "scope": {"openid"},
					})
					if err != nil || r.Status != http.StatusOK {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("token for %s: %v %d %s", u, err, r.Status, r.Error))
						mu.Unlock()
						return
					}
					tok = r.AccessToken
					mu.Lock()
					if exchanged[tok] {
						kind = "reissued" // the same token as an earlier login: cached
					}
					mu.Unlock()
				}
				r, err := api.TryCall(http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1+i%3))
				// A request that started in one phase and ended in the next
				// counts in neither the down nor the after phase's strict checks.
				if now := current(); now != ph {
					ph = ph + "→" + now
				}
				record(kind, ph, r, err, tok)
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	// NATS: a connection made through the callout before the kill, and a
	// token for a new one during it (devtenant stays up; the callout does not).
	existing, _ := natsAs(t, "nats-1", "orders")
	billingTok := workloadToken(t, "billing")
	nodeURL, err := stack.natsClientURL(ctx, "nats-3")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := stack.kill(ctx, "tts"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	phase = phaseDown
	mu.Unlock()
	killedAt := time.Now()
	checkNATSWithoutCallout(t, existing, nodeURL, billingTok)
	time.Sleep(time.Until(killedAt.Add(5 * time.Second)))
	mu.Lock()
	phase = "restarting"
	mu.Unlock()
	if err := stack.start(ctx, "tts"); err != nil {
		t.Fatal(err)
	}
	if err := stack.waitReady(ctx, "tts"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	phase = phaseBack
	mu.Unlock()
	down := time.Since(killedAt).Round(100 * time.Millisecond)
	if nc, _, err := natsConnect(nodeURL, billingTok, "billing", nats.CustomInboxPrefix("_INBOX_billing")); err != nil {
		t.Errorf("with the TTS back, billing's token still gets no NATS connection: %v", err)
	} else {
		nc.Close()
	}
	time.Sleep(3 * time.Second)
	stop()
	wg.Wait()

	keys := make([]string, 0, len(outcomes))
	for k := range outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%-28s %v", k, outcomes[k])
	}
	t.Logf("tts down for %v; %d orders accepted", down, len(accepted))
	if len(upRefusals) > 0 {
		t.Logf("503s while the TTS was up: %v", upRefusals)
	}
	if len(bad) > 0 {
		t.Errorf("%d answers other than 201 or 503 with Retry-After (never 401 or 500): %v", len(bad), bad[:min(10, len(bad))])
	}
	if n := outcomes["fresh "+phaseDown]["503"]; n == 0 {
		t.Errorf("no fresh token was refused with 503 while the TTS was down (%v): the scenario did not happen", outcomes["fresh "+phaseDown])
	}
	if n := outcomes["fresh "+phaseDown]["201"]; n > 0 {
		t.Errorf("%d orders with a fresh token were accepted while the TTS was down: who issued their transaction tokens?", n)
	}
	if n := outcomes["cached "+phaseDown]["201"]; n > 0 || outcomes["cached "+phaseDown]["503"] == 0 {
		t.Errorf("orders with cached transaction tokens while the TTS was down: %v, want only 503 (an event is sealed afresh)", outcomes["cached "+phaseDown])
	}
	if n := outcomes["fresh "+phaseBack]["201"]; n == 0 || outcomes["fresh "+phaseBack]["503"] > 0 {
		t.Errorf("fresh tokens after the TTS is back (ready): %v, want only 201", outcomes["fresh "+phaseBack])
	}

	verifyOrders(t, accepted, 60*time.Second)
	time.Sleep(time.Second)
	verifyOrders(t, accepted, time.Second)
	// No order beyond the accepted ones: a 503 created nothing.
	want := map[string]bool{}
	for _, o := range accepted {
		want[o.id] = true
	}
	for _, u := range users {
		var extra []string
		for id := range ordersOf(t, cached[u]) {
			if !before[u][id] && !want[id] {
				extra = append(extra, id)
			}
		}
		if len(extra) > 0 {
			slices.Sort(extra)
			t.Errorf("%s has %d orders that were never answered 201: %v", u, len(extra), extra[:min(10, len(extra))])
		}
	}
}
