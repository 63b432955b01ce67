package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
	"github.com/authmesh/authmesh/tools/trace"
)

// buildJaeger returns the path of Jaeger's binary from tools/jaeger/build.sh,
// which builds it once per tools/jaeger/go.mod and caches it in the checkout
// (bin/jaeger): the first build takes minutes, later runs none.
func buildJaeger(root string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "tools", "jaeger", "build.sh"))
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building Jaeger (tools/jaeger/build.sh): %v\n%s", err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}

// testOrderTraceInJaeger: with every service exporting to Jaeger (compose's
// tracing profile), an order placed under a trace context of the test's own
// is one trace in Jaeger's query API, fetched by that id, with spans of
// users, orders and billing hanging off the orders service's POST
// /v1/orders; and nothing recorded in it holds the caller's token or email.
func testOrderTraceInJaeger(t *testing.T) {
	s := requireStack(t)
	tok := api.Token(t, apiclient.Alice)
	traceID, parentID := randomHex(t, 16), randomHex(t, 8)
	var o apiclient.Order
	api.CallJSON(t, http.MethodPost, "orders", "/v1/orders", tok, apiclient.Mugs(1), http.StatusCreated, &o,
		"traceparent", "00-"+traceID+"-"+parentID+"-01")
	inv := api.WaitInvoice(t, tok, o.ID, "open", 10*time.Second)

	jaeger := &trace.Client{URL: s.url("jaeger")}
	want := []string{"users", "orders", "billing"}
	var tr trace.Trace
	// The services' batch span processors export every few seconds.
	apiclient.Eventually(t, 30*time.Second, "the order's trace in Jaeger with spans of "+strings.Join(want, ", "), func() (bool, string) {
		var err error
		if tr, err = jaeger.Trace(context.Background(), traceID); err != nil {
			return false, err.Error()
		}
		got := tr.Services()
		for _, svc := range want {
			if !slices.Contains(got, svc) {
				return false, fmt.Sprintf("%d spans of %v", len(tr.Spans), got)
			}
		}
		return true, ""
	})
	var b strings.Builder
	if err := trace.Render(&b, tr, trace.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("order %s, invoice %s:\n%s", o.ID, inv.ID, b.String())

	// The root is orders' server span, a child of the test's context.
	var root *trace.Span
	for i, sp := range tr.Spans {
		if tr.Service(sp) == "orders" && sp.OperationName == trace.CreateOrderSpan {
			root = &tr.Spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no %q span of orders in the trace", trace.CreateOrderSpan)
	}
	if !slices.ContainsFunc(root.References, func(r trace.Ref) bool { return r.RefType == trace.ChildOf && r.SpanID == parentID }) {
		t.Errorf("orders' %s: references %+v, want a child of the caller's span %s", trace.CreateOrderSpan, root.References, parentID)
	}
	if d, _ := root.Tag("authz.decision"); d != "allowed" {
		t.Errorf("orders' %s: authz.decision %q, want allowed", trace.CreateOrderSpan, d)
	}
	// Every span of users and billing descends from the root.
	byID := map[string]trace.Span{}
	for _, sp := range tr.Spans {
		byID[sp.SpanID] = sp
	}
	for _, sp := range tr.Spans {
		if svc := tr.Service(sp); (svc == "users" || svc == "billing") && !descends(byID, sp, root.SpanID) {
			t.Errorf("%s's span %q (%s) is not below orders' %s", svc, sp.OperationName, sp.SpanID, trace.CreateOrderSpan)
		}
	}
	// Nothing in the trace names the caller: no token, no email.
	for _, sp := range tr.Spans {
		var values []string
		for _, kv := range sp.Tags {
			values = append(values, kv.String())
		}
		for _, l := range sp.Logs {
			for _, kv := range l.Fields {
				values = append(values, kv.String())
			}
		}
		for _, v := range values {
			if strings.Contains(v, tok) || strings.Contains(v, tok[strings.LastIndexByte(tok, '.')+1:]) || strings.Contains(v, apiclient.Alice) {
				t.Errorf("%s's span %q records the caller's token or email: %q", tr.Service(sp), sp.OperationName, v)
			}
		}
	}
}

// descends reports whether sp is below the span with id top, through parents
// or links within the trace.
func descends(byID map[string]trace.Span, sp trace.Span, top string) bool {
	seen := map[string]bool{}
	queue := []trace.Span{sp}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, r := range cur.References {
			if r.SpanID == top {
				return true
			}
			if p, ok := byID[r.SpanID]; ok && !seen[r.SpanID] {
				seen[r.SpanID] = true
				queue = append(queue, p)
			}
		}
	}
	return false
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
