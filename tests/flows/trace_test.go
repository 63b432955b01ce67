package flows

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/platform/telemetry/oteltest"
	"github.com/authmesh/authmesh/tests/apiclient"
)

// TestOneTracePerOrder: an order is one trace across the three services,
// from POST /v1/orders (continuing the caller's W3C trace context) through
// the profile request-reply to users, order.created consumed by billing, to
// invoice.paid — published while serving the separate pay request — consumed
// by orders. A tampered copy of the order's event, sent by a non-Go client
// with a lower-case traceparent of the same trace, shows dead-lettered in
// it. No span anywhere holds a token, a test user's email or raw subject.
func TestOneTracePerOrder(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	who := api.Whoami(t, tok)
	traceID, root := randomHex(16), randomHex(8)

	var o apiclient.Order
	if err := tryPlace(tok, apiclient.Mugs(1), &o, []string{"traceparent", "00-" + traceID + "-" + root + "-01"}, http.StatusCreated); err != nil {
		t.Fatal(err)
	}
	inv := api.WaitInvoice(t, tok, o.ID, "open", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", tok, nil, http.StatusOK, nil)
	api.WaitOrder(t, tok, o.ID, "paid", apiclient.FlowDeadline)

	// The forged copy: the order's own event and token, one signature byte
	// changed, from a client that writes the W3C header in lower case.
	js := ordersJetStream(t)
	data, txn := storedCreated(t, js, o, who.UserID)
	forgedSpan := randomHex(8)
	msg := nats.NewMsg("orders.events.created")
	msg.Data = data
	msg.Header["traceparent"] = []string{"00-" + traceID + "-" + forgedSpan + "-01"}
	msg.Header.Set("Txn-Token", txn[:len(txn)-2]+flip(txn[len(txn)-2:]))
	msg.Header.Set(nats.MsgIdHdr, "order.created:"+o.ID+":forged-"+randomHex(4))
	if _, err := js.PublishMsg(stepCtx(t), msg); err != nil {
		t.Fatal(err)
	}

	name := func(s oteltest.Span) string { return s.Service + " " + s.Name }
	want := []string{
		"orders POST /v1/orders", "orders request authmesh.users.profile", "users process authmesh.users.profile",
		"orders publish orders.events.created", "billing process orders.events.created",
		"billing kv create billing_invoices", "billing publish billing.events.invoice.paid",
		"orders process billing.events.invoice.paid",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	all, err := stack.traces.Wait(ctx, func(spans []oteltest.Span) bool {
		got := map[string]bool{}
		dead := false
		for _, s := range oteltest.Trace(spans, traceID) {
			got[name(s)] = true
			dead = dead || (s.ParentSpanID == forgedSpan && hasEvent(s, "messaging.dead_lettered"))
		}
		for _, w := range want {
			if !got[w] {
				return false
			}
		}
		return dead
	})
	spans := oteltest.Trace(all, traceID)
	if err != nil {
		t.Fatalf("the order's trace is incomplete: %v\n%s", err, waterfall(spans))
	}
	find := func(n string, ok func(oteltest.Span) bool) oteltest.Span {
		t.Helper()
		for _, s := range spans {
			if name(s) == n && (ok == nil || ok(s)) {
				return s
			}
		}
		t.Fatalf("no span %q in\n%s", n, waterfall(spans))
		return oteltest.Span{}
	}
	byID := map[string]oteltest.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	parentOf := func(s oteltest.Span) string { return name(byID[s.ParentSpanID]) }

	post := find("orders POST /v1/orders", nil)
	if post.ParentSpanID != root || post.Kind != "server" || post.Attrs["http.route"] != "/v1/orders" ||
		post.Attrs["http.response.status_code"] != "201" || post.Attrs["authz.decision"] != "allowed" ||
		post.Attrs["order.id"] != o.ID {
		t.Errorf("POST /v1/orders span: parent %s, %s, %v", post.ParentSpanID, post.Kind, post.Attrs)
	}
	for child, parent := range map[string]string{
		"orders request authmesh.users.profile": "orders POST /v1/orders",
		"users process authmesh.users.profile":  "orders request authmesh.users.profile",
		"orders publish orders.events.created":  "orders POST /v1/orders",
		"billing kv create billing_invoices":    "billing process orders.events.created",
	} {
		if got := parentOf(find(child, nil)); got != parent {
			t.Errorf("%s: parent %q, want %q", child, got, parent)
		}
	}
	created := find("billing process orders.events.created", func(s oteltest.Span) bool { return s.Attrs["authmesh.result"] == "accepted" })
	if parentOf(created) != "orders publish orders.events.created" || created.Kind != "consumer" ||
		created.Attrs["messaging.jetstream.stream"] != "ORDERS_EVENTS" || created.Attrs["messaging.consumer.group.name"] != "billing-orders" ||
		created.Attrs["messaging.jetstream.delivery_count"] != "1" || created.Attrs["messaging.jetstream.stored_time"] == "" ||
		created.Attrs["authz.decision"] != "allowed" || created.Attrs["order.id"] != o.ID || created.Attrs["invoice.id"] != inv.ID {
		t.Errorf("billing's order.created span: parent %q, %v", parentOf(created), created.Attrs)
	}
	// invoice.paid: a child of the order's trace as billing stored it, with
	// a link to the pay request, whose own trace is another.
	paid := find("billing publish billing.events.invoice.paid", nil)
	if paid.ParentSpanID != created.SpanID || paid.Kind != "producer" {
		t.Errorf("invoice.paid publish: parent %q, want billing's order.created delivery", parentOf(paid))
	}
	var pay oteltest.Span
	for _, s := range all {
		if len(paid.Links) == 1 && s.SpanID == paid.Links[0].SpanID {
			pay = s
		}
	}
	if pay.Name != "POST /v1/invoices/:id/pay" || pay.TraceID == traceID || pay.Service != "billing" || pay.Attrs["invoice.id"] != inv.ID {
		t.Errorf("invoice.paid publish links %v; want one to the pay request's span (got %q)", paid.Links, pay.Name)
	}
	consumed := find("orders process billing.events.invoice.paid", nil)
	if consumed.ParentSpanID != paid.SpanID || consumed.Attrs["authmesh.result"] != "accepted" ||
		consumed.Attrs["order.id"] != o.ID || consumed.Attrs["invoice.id"] != inv.ID {
		t.Errorf("orders' invoice.paid span: parent %q, %v", parentOf(consumed), consumed.Attrs)
	}
	dead := find("billing process orders.events.created", func(s oteltest.Span) bool { return s.ParentSpanID == forgedSpan })
	if dead.StatusCode != "error" || dead.Attrs["authz.decision"] != "denied" || dead.Attrs["authz.error_code"] != "invalid_token" ||
		dead.Attrs["authmesh.result"] != "dead_lettered" {
		t.Errorf("the forged copy's delivery: %s %v", dead.StatusCode, dead.Attrs)
	}
	t.Logf("the order's trace:\n%s", waterfall(spans))
	scanSpans(t, all, append(testSecrets(t), txn, tok)...)
}

// hasEvent reports whether s recorded an event named n.
func hasEvent(s oteltest.Span, n string) bool {
	for _, e := range s.Events {
		if e.Name == n {
			return true
		}
	}
	return false
}

// flip changes a base64url suffix so the signature no longer verifies.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// jwtShaped matches a JWS compact serialisation (header.payload.…).
var jwtShaped = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.`)

// testSecrets are what identifies the test users: their emails and subjects.
func testSecrets(t *testing.T) []string {
	out := []string{}
	for _, u := range []string{apiclient.Alice, apiclient.Bob, apiclient.Carol, apiclient.Dave} {
		out = append(out, u, api.Whoami(t, api.Token(t, u)).UserID)
	}
	return out
}

// scanSpans fails on any string of any span (attributes, events, links,
// resource, names, status) that is JWT-shaped or holds one of forbidden.
func scanSpans(t *testing.T, spans []oteltest.Span, forbidden ...string) {
	t.Helper()
	if len(spans) == 0 {
		t.Fatal("no spans to scan")
	}
	bad := 0
	for _, s := range spans {
		for _, v := range s.Strings() {
			leak := jwtShaped.MatchString(v)
			for _, f := range forbidden {
				leak = leak || (f != "" && strings.Contains(v, f))
			}
			if leak && bad < 10 {
				t.Errorf("%s %q records %.80q", s.Service, s.Name, v)
			}
			if leak {
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d recorded strings hold a token or an identity (of %d spans scanned)", bad, len(spans))
	}
}

// waterfall renders spans as an indented tree (service, name, duration).
func waterfall(spans []oteltest.Span) string {
	children := map[string][]oteltest.Span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []oteltest.Span
	for _, s := range spans {
		if ids[s.ParentSpanID] {
			children[s.ParentSpanID] = append(children[s.ParentSpanID], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s oteltest.Span, depth int)
	walk = func(s oteltest.Span, depth int) {
		fmt.Fprintf(&b, "%s%-8s %s %v %s %s\n", strings.Repeat("  ", depth), s.Service, s.Name, s.Duration().Round(time.Microsecond), s.Attrs["authz.decision"], s.Attrs["authmesh.result"])
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// TestRedeliveryInTrace: a delivery billing did not acknowledge in time is
// delivered again, and both deliveries are consumer spans, children of the
// publisher's span, the second with delivery_count 2 and redelivered. The
// first delivery is left unacknowledged by freezing billing (SIGSTOP) just
// after a copy of an order's event is published, past the consumer's ack
// wait (1 s, its first back-off) and pull expiry (2 s); the copy is the
// order's own event, so handling it twice changes nothing.
func TestRedeliveryInTrace(t *testing.T) {
	setup(t)
	tok := api.Token(t, apiclient.Alice)
	who := api.Whoami(t, tok)
	o := api.PlaceOrder(t, tok, apiclient.Mugs(1))
	api.WaitInvoice(t, tok, o.ID, "open", apiclient.FlowDeadline)
	js := ordersJetStream(t)
	data, txn := storedCreated(t, js, o, who.UserID)

	for try := 1; ; try++ {
		traceID, parent := randomHex(16), randomHex(8)
		msg := nats.NewMsg("orders.events.created")
		msg.Data = data
		msg.Header["traceparent"] = []string{"00-" + traceID + "-" + parent + "-01"}
		msg.Header.Set("Txn-Token", txn)
		msg.Header.Set(nats.MsgIdHdr, "order.created:"+o.ID+":again-"+randomHex(4))
		freeze(t, "billing", func() {
			if _, err := js.PublishMsg(stepCtx(t), msg); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2500 * time.Millisecond)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		spans, err := stack.traces.Wait(ctx, func(spans []oteltest.Span) bool {
			n := 0
			for _, s := range oteltest.Trace(spans, traceID) {
				if s.ParentSpanID == parent && s.Name == "process orders.events.created" {
					n++
				}
			}
			return n >= 2
		})
		cancel()
		waitSettled(t, js)
		if err != nil && try < 3 {
			// The copy reached billing only after it thawed (no pull was
			// pending when it froze): one delivery, nothing redelivered.
			t.Logf("try %d: no redelivery seen; again", try)
			continue
		}
		spans = oteltest.Trace(spans, traceID)
		if err != nil {
			t.Fatalf("no redelivery in the trace after %d tries:\n%s", try, waterfall(spans))
		}
		seen := map[string]bool{}
		for _, s := range spans {
			if s.Name != "process orders.events.created" {
				continue // the KV spans of handling it
			}
			if s.ParentSpanID != parent || s.Kind != "consumer" || s.Service != "billing" {
				t.Errorf("span %s %q: parent %s kind %s, want billing's consumer span under the publisher's %s", s.Service, s.Name, s.ParentSpanID, s.Kind, parent)
			}
			seen[s.Attrs["messaging.jetstream.delivery_count"]+"/"+s.Attrs["messaging.jetstream.redelivered"]] = true
		}
		if !seen["1/"] || !seen["2/true"] {
			t.Errorf("deliveries %v, want 1/ (not marked redelivered) and 2/true\n%s", seen, waterfall(spans))
		}
		scanSpans(t, spans, append(testSecrets(t), txn, tok)...)
		return
	}
}

// freeze stops a service's process (SIGSTOP) while do runs, then lets it
// go on (SIGCONT).
func freeze(t *testing.T, name string, do func()) {
	t.Helper()
	svc := stack.services[name]
	svc.mu.Lock()
	p := svc.cmd.Process
	svc.mu.Unlock()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Error(err)
		}
	}()
	do()
}
