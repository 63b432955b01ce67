package platform

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// TestLivePublish: an update goes to its person's feed as exactly the
// status fields; one for nobody, or whose id would change the subject's
// shape, is not sent; a dead connection loses it without failing anyone.
func TestLivePublish(t *testing.T) {
	t.Parallel()
	s := natstest.Run(t, &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	sub, _ := natstest.Connect(t, s)
	msgs := make(chan *nats.Msg, 16)
	if _, err := sub.ChanSubscribe(mesh.LivePrefix+".>", msgs); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	pubConn, _ := natstest.Connect(t, s)
	live := NewLive(pubConn, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx := context.Background()

	live.Publish(ctx, "", "orders", LiveStatus{Kind: "order", ID: "o-0", Status: "pending"})
	for _, id := range []string{"o.1", "o>", "*", ""} {
		live.Publish(ctx, "auth0|alice", "orders", LiveStatus{Kind: "order", ID: id, Status: "pending"})
	}
	live.Publish(ctx, "auth0|alice", "orders", LiveStatus{Kind: "order", ID: "o-1", Status: "paid"})
	live.Publish(ctx, "auth0|alice", "invoices", LiveStatus{Kind: "invoice", ID: "inv_o-1", OrderID: "o-1", Status: "paid"})
	for _, want := range []struct{ subject, data string }{
		{mesh.LiveSubject("auth0|alice", "orders", "o-1"), `{"kind":"order","id":"o-1","status":"paid"}`},
		{mesh.LiveSubject("auth0|alice", "invoices", "inv_o-1"), `{"kind":"invoice","id":"inv_o-1","order_id":"o-1","status":"paid"}`},
	} {
		m := authztest.Receive(t, msgs, 5*time.Second, "a message on "+want.subject)
		if m.Subject != want.subject || string(m.Data) != want.data || len(m.Header) != 0 {
			t.Fatalf("got %s %s %v, want %s %s", m.Subject, m.Data, m.Header, want.subject, want.data)
		}
	}
	select {
	case m := <-msgs:
		t.Fatalf("sent on %s: %s", m.Subject, m.Data)
	case <-time.After(200 * time.Millisecond):
	}
	if n := strings.Count(logs.String(), "live update not sent"); n != 4 {
		t.Fatalf("%d refusals logged, want 4:\n%s", n, logs.String())
	}

	pubConn.Close()
	live.Publish(ctx, "auth0|alice", "orders", LiveStatus{Kind: "order", ID: "o-2", Status: "cancelled"})
	if !strings.Contains(logs.String(), "live update lost") || strings.Contains(logs.String(), mesh.LiveUID("auth0|alice")) {
		t.Fatalf("a lost update is logged, without naming its person:\n%s", logs.String())
	}
}
