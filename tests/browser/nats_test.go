package browser

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// parserJS feeds bytes (base64) to nats.js's Parser in the chunkings a
// WebSocket may deliver: all at once, byte by byte, and split in two at every
// offset. It returns the operations of the first, with "same" telling whether
// the others agreed; a throw is returned as {thrown: code}.
const parserJS = `(async (b64) => {
  const { Parser } = await import("/nats.js");
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const plain = (op) => {
    switch (op.op) {
      case "MSG": {
        const m = op.msg;
        return { op: "MSG", subject: m.subject, sid: m.sid, reply: m.reply, status: m.status, description: m.description, headers: Object.fromEntries(m.headers), text: m.text(), size: m.data.length };
      }
      case "-ERR":
        return { op: "-ERR", code: op.error.code, message: op.error.message, subject: op.error.subject };
      default:
        return op;
    }
  };
  const run = (chunks) => {
    const ops = [];
    const p = new Parser((op) => ops.push(plain(op)));
    try {
      for (const c of chunks) p.push(c);
    } catch (e) {
      ops.push({ thrown: e.code });
    }
    return JSON.stringify(ops);
  };
  const whole = run([bytes]);
  let same = run([...bytes].map((b) => new Uint8Array([b]))) === whole;
  for (let i = 1; i < bytes.length && same; i++) same = run([bytes.subarray(0, i), bytes.subarray(i)]) === whole;
  return { ops: JSON.parse(whole), same };
})`

// TestNATSParser checks web/nats.js's protocol parsing in Chromium: byte
// counts with multibyte payloads, headers, every operation the server sends,
// any split of the stream across WebSocket frames, and malformed input.
func TestNATSParser(t *testing.T) {
	t.Parallel()
	tab := natsModulePage(t, 2*time.Minute)

	const multibyte = "zoë · 日本 · 🎉" // 2-, 3- and 4-byte UTF-8
	hdr := "NATS/1.0\r\nNats-Msg-Id: m1\r\nX-Two: a\r\nX-Two: b\r\nx-two: lower\r\n\r\n"
	noResponders := "NATS/1.0 503 No Responders\r\n\r\n"
	stream := strings.Join([]string{
		`INFO {"server_id":"S","headers":true,"max_payload":1048576}`,
		fmt.Sprintf("MSG authmesh.live.dTE.orders.o1 1 %d\r\n%s", len(multibyte), multibyte),
		fmt.Sprintf("HMSG a.b 22 _INBOX.r %d %d\r\n%s%s", len(hdr), len(hdr)+len("{}"), hdr, "{}"),
		fmt.Sprintf("HMSG a.c 3 %d %d\r\n%s", len(noResponders), len(noResponders), noResponders),
		"MSG a.d 4 0\r\n",
		"PING", "PONG", "+OK",
		`-ERR 'Permissions Violation for Subscription to "authmesh.live.x.orders.>"'`,
		"ping",
	}, "\r\n") + "\r\n"

	tests := []struct {
		name   string
		stream string
		want   string // JSON of the operations
	}{
		{"every operation", stream, `[
			{"op":"INFO","info":{"server_id":"S","headers":true,"max_payload":1048576}},
			{"op":"MSG","subject":"authmesh.live.dTE.orders.o1","sid":"1","reply":"","status":"","description":"","headers":{},"text":"zoë · 日本 · 🎉","size":` + fmt.Sprint(len(multibyte)) + `},
			{"op":"MSG","subject":"a.b","sid":"22","reply":"_INBOX.r","status":"","description":"","headers":{"Nats-Msg-Id":["m1"],"X-Two":["a","b"],"x-two":["lower"]},"text":"{}","size":2},
			{"op":"MSG","subject":"a.c","sid":"3","reply":"","status":"503","description":"No Responders","headers":{},"text":"","size":0},
			{"op":"MSG","subject":"a.d","sid":"4","reply":"","status":"","description":"","headers":{},"text":"","size":0},
			{"op":"PING"},{"op":"PONG"},{"op":"+OK"},
			{"op":"-ERR","code":"permissions_violation","message":"Permissions Violation for Subscription to \"authmesh.live.x.orders.>\"","subject":"authmesh.live.x.orders.>"},
			{"op":"PING"}]`},
		{"payload bytes are counted, not characters", "MSG a 1 2\r\nü\r\nPING\r\n",
			`[{"op":"MSG","subject":"a","sid":"1","reply":"","status":"","description":"","headers":{},"text":"ü","size":2},{"op":"PING"}]`},
		{"an incomplete message waits for more", "PING\r\nMSG a 1 5\r\nhel", `[{"op":"PING"}]`},
		{"authorization violation", "-ERR 'Authorization Violation'\r\n",
			`[{"op":"-ERR","code":"authorization_violation","message":"Authorization Violation","subject":""}]`},
		{"expiry", "-ERR 'User Authentication Expired'\r\n",
			`[{"op":"-ERR","code":"authentication_expired","message":"User Authentication Expired","subject":""}]`},
		{"bad size", "MSG a 1 x\r\n", `[{"thrown":"protocol_error"}]`},
		{"missing size", "MSG a\r\n", `[{"thrown":"protocol_error"}]`},
		{"payload longer than its size", "MSG a 1 3\r\nabcd\r\n", `[{"thrown":"protocol_error"}]`},
		{"header size over total", "HMSG a 1 10 5\r\n0123456789\r\n", `[{"thrown":"protocol_error"}]`},
		{"unknown operation", "HELLO\r\n", `[{"thrown":"protocol_error"}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := natsEval(t, tab, parserJS+fmt.Sprintf("(%q)", base64.StdEncoding.EncodeToString([]byte(tc.stream))))
			var res struct {
				Ops  json.RawMessage `json:"ops"`
				Same bool            `json:"same"`
			}
			if err := json.Unmarshal([]byte(got), &res); err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, string(res.Ops), tc.want) {
				t.Errorf("ops\n got %s\nwant %s", res.Ops, tc.want)
			}
			if !res.Same {
				t.Errorf("the operations differ when the stream is split across chunks")
			}
		})
	}

	units := []struct {
		name, expr, want string
	}{
		{"CONNECT body",
			`n.connectOptions("tok", "authmesh-web")`,
			`{"auth_token":"tok","headers":true,"no_responders":false,"verbose":false,"pedantic":false,"protocol":1,"lang":"javascript","version":"` + "1.0.0" + `","name":"authmesh-web"}`},
		{"backoff doubles up to the cap",
			`[0, 1, 2, 3, 4, 10, 1000].map((i) => n.backoffDelay(i, 500, 5000, () => 1))`,
			`[500,1000,2000,4000,5000,5000,5000]`},
		{"backoff jitter stays within 75%-100%",
			`[n.backoffDelay(2, 500, 5000, () => 0), n.backoffDelay(2, 500, 5000, () => 0.5)]`,
			`[1500,1750]`},
		{"unclassified server error",
			`n.errorFromServer(" 'Maximum Connections Exceeded'").code`,
			`"server_error"`},
		{"connection needs a url and getToken",
			`[() => new n.Connection({getToken: () => ""}), () => new n.Connection({url: "ws://x"})].map((f) => { try { f(); return "ok"; } catch (e) { return e.name; } })`,
			`["TypeError","TypeError"]`},
	}
	for _, tc := range units {
		t.Run(tc.name, func(t *testing.T) {
			got := natsEval(t, tab, fmt.Sprintf(`(async () => { const n = await import("/nats.js"); return %s; })()`, tc.expr))
			if !jsonEqual(t, got, tc.want) {
				t.Errorf("%s\n got %s\nwant %s", tc.expr, got, tc.want)
			}
		})
	}
}

// TestNATSSubjects checks web/live.js: the user's subject token matches Go's
// base64.RawURLEncoding of the sub (what the server side computes), the
// subscriptions follow the token's read permissions, and only well-formed
// updates are used.
func TestNATSSubjects(t *testing.T) {
	t.Parallel()
	tab := natsModulePage(t, 2*time.Minute)
	enc := base64.RawURLEncoding.EncodeToString

	for _, sub := range []string{"auth0|alice", "auth0|zoë-日本-🎉", "google-oauth2|1?>", "a"} {
		t.Run("uid of "+sub, func(t *testing.T) {
			got := natsEval(t, tab, fmt.Sprintf(`import("/live.js").then((l) => l.uid(%q))`, sub))
			if want, _ := json.Marshal(enc([]byte(sub))); got != string(want) {
				t.Errorf("uid(%q) = %s, want %s", sub, got, want)
			}
		})
	}

	alice := enc([]byte("auth0|alice"))
	tests := []struct {
		name, expr, want string
	}{
		{"both read permissions",
			`l.subjects({sub: "auth0|alice", permissions: ["read:orders", "pay:invoices", "read:invoices"]})`,
			fmt.Sprintf(`["authmesh.live.%s.orders.>","authmesh.live.%s.invoices.>"]`, alice, alice)},
		{"orders only",
			`l.subjects({sub: "auth0|alice", permissions: ["read:orders"]})`,
			fmt.Sprintf(`["authmesh.live.%s.orders.>"]`, alice)},
		{"no read permission, no subscription",
			`l.subjects({sub: "auth0|alice", permissions: ["pay:invoices"]})`,
			`[]`},
		{"no sub, no subscription",
			`l.subjects({permissions: ["read:orders"]})`,
			`[]`},
		{"order update",
			`l.update(msg("authmesh.live.u.orders.o-1", {kind: "order", id: "o-1", status: "paid"}))`,
			`{"kind":"order","id":"o-1","status":"paid"}`},
		{"invoice update",
			`l.update(msg("authmesh.live.u.invoices.i-1", {kind: "invoice", id: "i-1", order_id: "o-1", status: "open"}))`,
			`{"kind":"invoice","id":"i-1","order_id":"o-1","status":"open"}`},
		{"kind must match the subject",
			`l.update(msg("authmesh.live.u.orders.i-1", {kind: "invoice", id: "i-1", order_id: "o-1", status: "open"}))`,
			`null`},
		{"id must match the subject",
			`l.update(msg("authmesh.live.u.orders.o-1", {kind: "order", id: "o-2", status: "paid"}))`,
			`null`},
		{"not JSON",
			`l.update({subject: "authmesh.live.u.orders.o-1", json: () => JSON.parse("{")})`,
			`null`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := natsEval(t, tab, fmt.Sprintf(`(async () => {
				const l = await import("/live.js");
				const msg = (subject, body) => ({ subject, json: () => body });
				return %s;
			})()`, tc.expr))
			if !jsonEqual(t, got, tc.want) {
				t.Errorf("%s\n got %s\nwant %s", tc.expr, got, tc.want)
			}
		})
	}
}

// recorderJS installs window.natsRec(name, url, tokens): a nats.js
// Connection whose states, errors and messages are recorded in
// window.recs[name], whose getToken hands out tokens in order (repeating the
// last), and window.frames: every WebSocket frame the page receives.
const recorderJS = `(() => {
  window.recs = {};
  window.frames = [];
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        const text = new TextDecoder("latin1").decode(e.data);
        window.frames.push({ size: text.length, msgs: text.match(/MSG /g)?.length || 0, start: text.slice(0, 6) });
      });
    }
  };
  window.natsRec = async (name, url, tokens) => {
    const { connect } = await import("/nats.js");
    const rec = { states: [], errors: [], msgs: [], tokenCalls: 0 };
    const getToken = async () => tokens[Math.min(rec.tokenCalls++, tokens.length - 1)];
    rec.conn = connect({ url, name, getToken, minDelayMs: 50, maxDelayMs: 400 });
    rec.conn.addEventListener("status", (e) => rec.states.push(e.detail.state));
    rec.conn.addEventListener("error", (e) => rec.errors.push({ code: e.detail.code, message: e.detail.message, subject: e.detail.subject }));
    rec.sub = (subject) => rec.conn.subscribe(subject, (m) => rec.msgs.push({ subject: m.subject, headers: Object.fromEntries(m.headers), text: m.text(), size: m.data.length }));
    window.recs[name] = rec;
    return true;
  };
  return true;
})()`

// TestNATSLive runs web/nats.js in Chromium against an in-process
// nats-server's WebSocket listener, authenticating with bearer tokens as the
// SPA does.
func TestNATSLive(t *testing.T) {
	t.Parallel()
	alice := "authmesh.live." + base64.RawURLEncoding.EncodeToString([]byte("auth0|alice"))
	ns := startNATS(t, map[string]natsGrant{
		"alice":       {subscribe: []string{alice + ".>"}},
		"alice-fresh": {subscribe: []string{alice + ".>"}},
		"alice-short": {subscribe: []string{alice + ".>"}, lifetime: 700 * time.Millisecond},
	})
	tab := natsModulePage(t, 3*time.Minute)
	natsEval(t, tab, recorderJS)

	// open starts a recorded connection and closes it when the subtest ends.
	open := func(t *testing.T, name string, tokens ...string) {
		t.Helper()
		tj, _ := json.Marshal(tokens)
		natsEval(t, tab, fmt.Sprintf(`natsRec(%q, %q, %s)`, name, ns.wsURL, tj))
		t.Cleanup(func() { natsEval(t, tab, fmt.Sprintf(`(recs[%q].conn.close(), true)`, name)) })
	}
	rec := func(t *testing.T, name, field string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(natsEval(t, tab, fmt.Sprintf(`recs[%q].%s`, name, field))), v); err != nil {
			t.Fatal(err)
		}
	}
	waitRec := func(t *testing.T, name, cond string) {
		t.Helper()
		natsWaitJS(t, tab, fmt.Sprintf(`(r => %s)(recs[%q])`, cond, name), 10*time.Second)
	}
	type received struct {
		Subject string              `json:"subject"`
		Headers map[string][]string `json:"headers"`
		Text    string              `json:"text"`
		Size    int                 `json:"size"`
	}

	t.Run("receives MSG and HMSG", func(t *testing.T) {
		open(t, "receive", "alice")
		natsEval(t, tab, fmt.Sprintf(`(recs.receive.sub(%q), true)`, alice+".orders.>"))
		c := ns.waitSubs(t, "receive", 1)
		if c.Lang != "javascript" || c.Version != "1.0.0" {
			t.Errorf("CONNECT lang/version = %q/%q", c.Lang, c.Version)
		}
		big := strings.Repeat("日本🎉", 1500) // 10.5 kB: more than one 4 kB browser frame
		hdr := nats.Header{}
		hdr.Add("Nats-Msg-Id", "m-2")
		hdr.Add("X-Two", "a")
		hdr.Add("X-Two", "b")
		want := []received{
			{Subject: alice + ".orders.o1", Headers: map[string][]string{}, Text: `{"kind":"order","id":"o1","status":"paid"}`, Size: 42},
			{Subject: alice + ".orders.o2", Headers: map[string][]string(hdr), Text: `{"note":"zoë 日本 🎉"}`, Size: len(`{"note":"zoë 日本 🎉"}`)},
			{Subject: alice + ".orders.o3", Headers: map[string][]string{}, Text: big, Size: len(big)},
		}
		type frame struct {
			Size  int    `json:"size"`
			Msgs  int    `json:"msgs"`
			Start string `json:"start"`
		}
		// The framing the parser has to cope with must happen: several
		// messages in one frame, and one message over several frames.
		// Whether the server sends the first messages in one frame depends
		// on when the publisher's flusher runs, so the batch is sent again
		// (each time checked in full) until it did, up to five times.
		var frames []frame
		shared, split := false, false
		for attempt := 0; attempt < 5 && !(shared && split); attempt++ {
			natsEval(t, tab, `(frames.length = 0, recs.receive.msgs.length = 0, true)`)
			ns.publish(t,
				&nats.Msg{Subject: alice + ".orders.o1", Data: []byte(`{"kind":"order","id":"o1","status":"paid"}`)},
				&nats.Msg{Subject: alice + ".orders.o2", Data: []byte(`{"note":"zoë 日本 🎉"}`), Header: hdr},
				&nats.Msg{Subject: alice + ".invoices.i1", Data: []byte(`not for this subscription`)},
				&nats.Msg{Subject: alice + ".orders.o3", Data: []byte(big)},
			)
			waitRec(t, "receive", `r.msgs.length >= 3`)
			var msgs []received
			rec(t, "receive", "msgs", &msgs)
			if len(msgs) != len(want) {
				t.Fatalf("received %d messages, want %d: %+v", len(msgs), len(want), msgs)
			}
			for i := range want {
				if msgs[i].Subject != want[i].Subject || msgs[i].Text != want[i].Text || msgs[i].Size != want[i].Size || fmt.Sprint(msgs[i].Headers) != fmt.Sprint(want[i].Headers) {
					t.Fatalf("message %d:\n got %+.200v\nwant %+.200v", i, msgs[i], want[i])
				}
			}
			frames = nil
			if err := json.Unmarshal([]byte(natsEval(t, tab, `frames`)), &frames); err != nil {
				t.Fatal(err)
			}
			for _, f := range frames {
				shared = shared || f.Msgs >= 2
				split = split || (f.Msgs == 0 && f.Start != "PING\r\n")
			}
		}
		if !shared || !split {
			t.Errorf("frames %+v: want one carrying several messages (%v) and one continuing a message (%v)", frames, shared, split)
		}
	})

	t.Run("answers the server's PING", func(t *testing.T) {
		open(t, "ping", "alice")
		before := ns.waitSubs(t, "ping", 0)
		// Pinged every 100 ms with 2 PINGs allowed out: a client that did
		// not answer would be dropped as stale long before this.
		time.Sleep(1500 * time.Millisecond)
		after := ns.conn(t, "ping")
		if after == nil || after.Cid != before.Cid {
			t.Fatalf("the connection was dropped (before %+v, after %+v)", before, after)
		}
		if after.RTT == "" {
			t.Errorf("the server measured no round trip: no PONG answered its PING")
		}
		var states []string
		rec(t, "ping", "states", &states)
		if !slices.Equal(states, []string{"connecting", "connected"}) {
			t.Errorf("states = %v, want one connect", states)
		}
	})

	t.Run("wrong token is an authorization error", func(t *testing.T) {
		open(t, "denied", "not-a-token")
		waitRec(t, "denied", `r.errors.length > 0 && r.states.includes("disconnected")`)
		var errs []map[string]string
		rec(t, "denied", "errors", &errs)
		if errs[0]["code"] != "authorization_violation" || errs[0]["message"] != "Authorization Violation" {
			t.Errorf("errors = %v, want authorization_violation first", errs)
		}
		var states []string
		rec(t, "denied", "states", &states)
		if slices.Contains(states, "connected") {
			t.Errorf("states = %v: a refused CONNECT must not count as connected", states)
		}
	})

	t.Run("subscribing outside the permissions is a permissions violation", func(t *testing.T) {
		open(t, "perm", "alice")
		bob := "authmesh.live." + base64.RawURLEncoding.EncodeToString([]byte("auth0|bob")) + ".orders.>"
		natsEval(t, tab, fmt.Sprintf(`(recs.perm.sub(%q), recs.perm.sub(%q), true)`, bob, alice+".orders.>"))
		waitRec(t, "perm", `r.errors.length > 0`)
		var errs []map[string]string
		rec(t, "perm", "errors", &errs)
		if errs[0]["code"] != "permissions_violation" || errs[0]["subject"] != bob {
			t.Errorf("errors = %v, want permissions_violation for %s", errs, bob)
		}
		// The connection stays up, and the permitted subscription works.
		ns.waitSubs(t, "perm", 1)
		ns.publish(t, &nats.Msg{Subject: alice + ".orders.o1", Data: []byte(`{}`)})
		waitRec(t, "perm", `r.msgs.length === 1`)
	})

	t.Run("reconnects with a fresh token after the server restarts", func(t *testing.T) {
		open(t, "restart", "alice", "alice-fresh")
		natsEval(t, tab, fmt.Sprintf(`(recs.restart.sub(%q), true)`, alice+".orders.>"))
		ns.waitSubs(t, "restart", 1)
		ns.restart(t)
		waitRec(t, "restart", `r.states.filter((s) => s === "connected").length === 2`)
		var calls int
		rec(t, "restart", "tokenCalls", &calls)
		if calls < 2 {
			t.Errorf("getToken called %d times, want once per connect", calls)
		}
		if seen := ns.auth.seenTokens(); !slices.Contains(seen, "alice-fresh") {
			t.Errorf("the server saw tokens %v, want the fresh one after the restart", seen)
		}
		ns.waitSubs(t, "restart", 1) // re-subscribed
		ns.publish(t, &nats.Msg{Subject: alice + ".orders.o9", Data: []byte(`after restart`)})
		waitRec(t, "restart", `r.msgs.length === 1 && r.msgs[0].text === "after restart"`)
	})

	t.Run("reconnects when the token expires", func(t *testing.T) {
		open(t, "expiry", "alice-short", "alice-fresh")
		natsEval(t, tab, fmt.Sprintf(`(recs.expiry.sub(%q), true)`, alice+".invoices.>"))
		waitRec(t, "expiry", `r.errors.some((e) => e.code === "authentication_expired") && r.states.filter((s) => s === "connected").length === 2`)
		var calls int
		rec(t, "expiry", "tokenCalls", &calls)
		if calls < 2 {
			t.Errorf("getToken called %d times, want once per connect", calls)
		}
		ns.waitSubs(t, "expiry", 1)
		ns.publish(t, &nats.Msg{Subject: alice + ".invoices.i1", Data: []byte(`after expiry`)})
		waitRec(t, "expiry", `r.msgs.length === 1`)
	})

	t.Run("UNSUB stops delivery", func(t *testing.T) {
		open(t, "unsub", "alice")
		natsEval(t, tab, fmt.Sprintf(`(window.gone = recs.unsub.sub(%q), recs.unsub.sub(%q), true)`, alice+".orders.>", alice+".invoices.>"))
		ns.waitSubs(t, "unsub", 2)
		natsEval(t, tab, `(gone.unsubscribe(), true)`)
		ns.waitSubs(t, "unsub", 1)
		// Same publisher, same order: the invoice arriving means the order
		// message would have arrived before it.
		ns.publish(t,
			&nats.Msg{Subject: alice + ".orders.o1", Data: []byte(`order`)},
			&nats.Msg{Subject: alice + ".invoices.i1", Data: []byte(`invoice`)},
		)
		waitRec(t, "unsub", `r.msgs.length > 0`)
		var msgs []received
		rec(t, "unsub", "msgs", &msgs)
		if len(msgs) != 1 || msgs[0].Text != "invoice" {
			t.Errorf("received %+v, want only the invoice", msgs)
		}
	})

	t.Run("close stops everything", func(t *testing.T) {
		open(t, "close", "alice")
		ns.waitSubs(t, "close", 0)
		natsEval(t, tab, `(recs.close.conn.close(), true)`)
		deadline := time.Now().Add(5 * time.Second)
		for ns.conn(t, "close") != nil {
			if time.Now().After(deadline) {
				t.Fatal("the server still has the connection after close()")
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(600 * time.Millisecond) // longer than the backoff cap
		if c := ns.conn(t, "close"); c != nil {
			t.Errorf("reconnected after close(): %+v", c)
		}
		var states []string
		rec(t, "close", "states", &states)
		if states[len(states)-1] != "closed" {
			t.Errorf("states = %v, want closed last", states)
		}
	})
}
