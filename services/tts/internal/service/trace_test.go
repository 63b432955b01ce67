package service_test

import (
	"context"
	"os"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// recorded holds every span the package's tests end (TestMain installs the
// SDK with it as its only exporter; the TTS runs in process).
var recorded = tracetest.NewInMemoryExporter()

func TestMain(m *testing.M) { os.Exit(authztest.RecordSpans(recorded, m.Run)) }

// TestExchangeTraced: the TTS answers an exchange under a server span, a
// child of the requesting workload's client span, with the decision on it
// as natsauth's endpoints record theirs — and no token, issued or
// presented, nor the person's email or subject, anywhere in it.
func TestExchangeTraced(t *testing.T) {
	f := newFixture(t)
	tts := f.start(t, "")
	const email = "alice@authmesh.dev"
	alice := f.UserToken(t, email, "openid")
	orders, billing := f.client(t, "orders-service"), f.client(t, "billing-service")

	exchange := func(c *natsauth.TxnClient) (tracetest.SpanStub, tracetest.SpanStub, string) {
		t.Helper()
		ctx, root := otel.Tracer("test").Start(context.Background(), t.Name())
		tok, _ := c.Exchange(ctx, alice, []string{"read:profile", "create:orders"})
		root.End()
		id := root.SpanContext().TraceID()
		var cli, srv tracetest.SpanStub
		authztest.Eventually(t, 5*time.Second, func() bool {
			for _, s := range recorded.GetSpans() {
				if s.SpanContext.TraceID() != id {
					continue
				}
				switch s.Name {
				case "request " + natsauth.DefaultTxnSubject:
					cli = s
				case "process " + natsauth.DefaultTxnSubject:
					srv = s
				}
			}
			return cli.Name != "" && srv.Name != ""
		}, "the exchange's client and server spans")
		if srv.SpanKind != trace.SpanKindServer || srv.Parent.SpanID() != cli.SpanContext.SpanID() || !srv.Parent.IsRemote() {
			t.Fatalf("server span kind %v parent %v, want a server span under the client's %v", srv.SpanKind, srv.Parent, cli.SpanContext.SpanID())
		}
		return cli, srv, tok
	}

	_, srv, issued := exchange(orders)
	c, err := txnValidator(t, tts.JWKSURL).Validate(context.Background(), issued)
	if err != nil {
		t.Fatalf("orders got no transaction token: %v", err)
	}
	sub := c.Subject
	wantAttrs(t, srv, map[string]string{"authz.decision": "allowed", "authz.sub_hash": authz.SubjectHash(sub),
		"authz.req_wl": "orders-service", "nats.micro.endpoint": "exchange", "messaging.system": "nats"})
	authztest.NoSecrets(t, tracetest.SpanStubs{srv}, alice, issued, email, sub)

	// billing may not ask for read:profile nor create:orders: refused.
	_, srv, _ = exchange(billing)
	wantAttrs(t, srv, map[string]string{"authz.decision": "denied", "authz.error_code": string(authz.CodeInsufficientScope),
		"authz.reason": "no_scope_granted", "nats.micro.error_code": "403"})
	authztest.NoSecrets(t, tracetest.SpanStubs{srv}, alice, email, sub)
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, kv := range s.Attributes {
		got[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("span %q: %s = %q, want %q (attributes %v)", s.Name, k, got[k], v, got)
		}
	}
}
