package browser

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

// natsTokenAuth authenticates NATS clients by the bearer token of their CONNECT,
// the way the tenant-trusting server does: each known token maps to the
// subjects it may subscribe to. It records every token presented, so tests
// can see that the page asked for a fresh one on reconnect.
type natsTokenAuth struct {
	mu     sync.Mutex
	grants map[string]natsGrant
	seen   []string
}

type natsGrant struct {
	subscribe []string      // nil: anything, and publishing too (the Go side)
	lifetime  time.Duration // > 0: the server ends the connection then, as at a token's exp
}

func (a *natsTokenAuth) Check(c server.ClientAuthentication) bool {
	token := c.GetOpts().Token
	a.mu.Lock()
	a.seen = append(a.seen, token)
	g, ok := a.grants[token]
	a.mu.Unlock()
	if !ok {
		return false
	}
	u := &server.User{Username: "token"}
	if g.subscribe != nil {
		u.Permissions = &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: g.subscribe},
		}
	}
	if g.lifetime > 0 {
		u.ConnectionDeadline = time.Now().Add(g.lifetime)
	}
	c.RegisterUser(u)
	return true
}

// seenTokens is a copy of the tokens presented so far.
func (a *natsTokenAuth) seenTokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// natsServer is an in-process nats-server with a WebSocket listener on
// loopback (no TLS: test only) and a Go connection that publishes.
type natsServer struct {
	auth   *natsTokenAuth
	srv    *server.Server
	pub    *nats.Conn
	wsPort int
	wsURL  string
}

const natsPublisherToken = "publisher"

// startNATS starts the server on random ports; it stops when the test ends.
func startNATS(t *testing.T, grants map[string]natsGrant) *natsServer {
	t.Helper()
	grants[natsPublisherToken] = natsGrant{}
	n := &natsServer{auth: &natsTokenAuth{grants: grants}}
	n.start(t, -1)
	t.Cleanup(n.stop)
	return n
}

// start runs a server, on wsPort for WebSockets (-1: any free port), until
// stop.
func (n *natsServer) start(t *testing.T, wsPort int) {
	t.Helper()
	opts := &server.Options{
		ServerName:                 "browser-test",
		Host:                       "127.0.0.1",
		Port:                       -1,
		NoLog:                      true,
		NoSigs:                     true,
		MaxPingsOut:                2,
		CustomClientAuthentication: n.auth,
		Websocket: server.WebsocketOpts{
			Host:  "127.0.0.1",
			Port:  wsPort,
			NoTLS: true,
			// Frequent PINGs: a client that does not answer them is
			// dropped as stale within a few hundred milliseconds.
			PingInterval: 100 * time.Millisecond,
		},
	}
	// Not natstest.Run: the server lives until stop (restart calls it in a
	// subtest, and the new server outlives that subtest).
	srv, err := natstest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	ports := srv.PortsInfo(5 * time.Second)
	if ports == nil || len(ports.WebSocket) == 0 {
		t.Fatal("nats-server has no websocket listener")
	}
	u, err := url.Parse(ports.WebSocket[0])
	if err != nil {
		t.Fatal(err)
	}
	n.wsPort, _ = strconv.Atoi(u.Port())
	n.wsURL = fmt.Sprintf("ws://127.0.0.1:%d", n.wsPort)
	pub, err := nats.Connect(srv.ClientURL(), nats.Token(natsPublisherToken), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	n.srv, n.pub = srv, pub
}

func (n *natsServer) stop() {
	n.pub.Close()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// restart stops the server, dropping every client, and starts a new one on
// the same WebSocket port.
func (n *natsServer) restart(t *testing.T) {
	t.Helper()
	n.stop()
	n.start(t, n.wsPort)
}

// publish sends messages from Go and flushes, so the server has them all.
func (n *natsServer) publish(t *testing.T, msgs ...*nats.Msg) {
	t.Helper()
	for _, m := range msgs {
		if err := n.pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.pub.Flush(); err != nil {
		t.Fatal(err)
	}
}

// conn is the server's view of the client that sent CONNECT with this name,
// or nil.
func (n *natsServer) conn(t *testing.T, name string) *server.ConnInfo {
	t.Helper()
	cz, err := n.srv.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// waitSubs waits until the client named name holds exactly subs
// subscriptions on the server: only then is a publish sure to reach it.
func (n *natsServer) waitSubs(t *testing.T, name string, subs int) *server.ConnInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := n.conn(t, name)
		if c != nil && int(c.NumSubs) == subs {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %q: want %d subscriptions on the server, have %+v", name, subs, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// natsModulePage starts Chromium on a blank page of an httptest server that
// serves web/, so a test can import the SPA's modules.
func natsModulePage(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return modulesPage(t, ctx)
}

// natsEval evaluates an expression in the page, awaits it, and returns its
// JSON.
func natsEval(t *testing.T, tab context.Context, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(async () => JSON.stringify(await (%s)))()`, expr), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return got
}

// natsWaitJS waits until a JavaScript condition holds in the page.
func natsWaitJS(t *testing.T, tab context.Context, cond string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, waitJS(cond)); err != nil {
		t.Fatal(err)
	}
}
