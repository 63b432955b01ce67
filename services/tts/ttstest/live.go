package ttstest

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// WebSocket gives the stack's NATS server the WebSocket listener people
// connect to (a free loopback port, no TLS), as deploy/nats has on 8405:
// StackConfig{NATS: ttstest.WebSocket}.
func WebSocket(o *server.Options) {
	o.Websocket.Host, o.Websocket.Port, o.Websocket.NoTLS = "127.0.0.1", -1, true
}

// Feed is a person's live connection as the SPA makes it: over WebSocket,
// with their access token as the CONNECT token, subscribed to their own
// live feeds. The stack needs WebSocket.
type Feed struct {
	Conn *nats.Conn
	Sub  string // the person's token's sub
	msgs chan *nats.Msg
	errs chan error
}

// Feed connects the user with email and subscribes to their feeds of kinds
// (mesh.LiveFeeds: "orders", "invoices"); it closes with tb.
func (s *Stack) Feed(tb testing.TB, email string, kinds ...string) *Feed {
	tb.Helper()
	tok := s.UserToken(tb, email, "")
	f := &Feed{Sub: Subject(tb, tok), msgs: make(chan *nats.Msg, 64), errs: make(chan error, 16)}
	nc, err := nats.Connect(s.NATS.WebsocketURL(), nats.Token(tok), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case f.errs <- err:
			default:
			}
		}))
	if err != nil {
		tb.Fatalf("ttstest: %s over WebSocket: %v", email, err)
	}
	tb.Cleanup(nc.Close)
	f.Conn = nc
	for _, k := range kinds {
		if _, err := nc.ChanSubscribe(mesh.LivePrefix+"."+mesh.LiveUID(f.Sub)+"."+k+".>", f.msgs); err != nil {
			tb.Fatalf("ttstest: subscribe to %s's %s: %v", email, k, err)
		}
	}
	// The server has the subscriptions (or refused them) once it answers.
	if err := nc.Flush(); err != nil {
		tb.Fatalf("ttstest: %s's feed: %v", email, err)
	}
	f.checkErrs(tb)
	return f
}

// Expect fails tb unless the next update, within wait, is on subject and
// says exactly payload (no other key) with no headers (no token rides
// along).
func (f *Feed) Expect(tb testing.TB, wait time.Duration, subject string, payload map[string]any) {
	tb.Helper()
	select {
	case m := <-f.msgs:
		var got map[string]any
		if err := json.Unmarshal(m.Data, &got); err != nil {
			tb.Fatalf("live update on %s is not JSON: %v", m.Subject, err)
		}
		if m.Subject != subject || !maps.Equal(got, payload) {
			tb.Fatalf("live update on %s: %s\nwant on %s: %v", m.Subject, m.Data, subject, payload)
		}
		if len(m.Header) != 0 {
			tb.Fatalf("live update on %s has headers %v", m.Subject, m.Header)
		}
	case err := <-f.errs:
		tb.Fatalf("live connection: %v", err)
	case <-time.After(wait):
		tb.Fatalf("no live update on %s within %s", subject, wait)
	}
}

// Quiet fails tb if an update (or an error) arrives within d.
func (f *Feed) Quiet(tb testing.TB, d time.Duration) {
	tb.Helper()
	select {
	case m := <-f.msgs:
		tb.Fatalf("unexpected live update on %s: %s", m.Subject, m.Data)
	case err := <-f.errs:
		tb.Fatalf("live connection: %v", err)
	case <-time.After(d):
	}
}

// Err returns the connection's next asynchronous error (a permission
// violation), waiting up to wait; nil when none came.
func (f *Feed) Err(wait time.Duration) error {
	select {
	case err := <-f.errs:
		return err
	case <-time.After(wait):
		return nil
	}
}

func (f *Feed) checkErrs(tb testing.TB) {
	tb.Helper()
	select {
	case err := <-f.errs:
		tb.Fatalf("live connection: %v", err)
	default:
	}
}

// Subject reads the sub of a token the tenant issued (not verified: the
// test holds the token it was given).
func Subject(tb testing.TB, tok string) string {
	tb.Helper()
	parts := strings.Split(tok, ".")
	var c struct{ Sub string }
	if len(parts) != 3 {
		tb.Fatal("ttstest: not a JWT")
	}
	if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(raw, &c) != nil || c.Sub == "" {
		tb.Fatal("ttstest: token without a sub")
	}
	return c.Sub
}
