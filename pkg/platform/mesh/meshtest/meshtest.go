// Package meshtest runs an in-process nats-server with the mesh's
// configuration (deploy/nats/accounts.conf, with the development callout
// keys) and its auth callout, so component tests see the same isolation and
// the same token-to-identity mapping as make run, compose and Kubernetes.
//
// make run's embedded server (tools/devstack.NATSOptions, which tests/flows
// also starts) loads deploy/nats/nats.conf instead: its server settings
// (listeners, WebSocket, monitoring) around accounts.conf (which compose and
// Kubernetes include too) and keys.conf, both of which mesh's
// TestGeneratedFilesAreCurrent keeps equal to what Config generates here. The
// two are not one starter on purpose: meshtest generates the configuration so
// that a service's tests need no file outside its module (nor pkg/platform a
// tool's), and make run keeps running the files that are deployed.
package meshtest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// Config is the server configuration: the development callout keys, then
// the accounts.
func Config() (string, error) {
	var keys, acc bytes.Buffer
	if err := mesh.WriteDevKeys(&keys); err != nil {
		return "", err
	}
	if err := mesh.WriteNATSConfig(&acc); err != nil {
		return "", err
	}
	return strings.Replace(acc.String(), "include keys.conf\n", keys.String(), 1), nil
}

// Options shape the callout. The zero value gives the server a test issuer
// of its own (authztest), whose tokens Connect presents.
type Options struct {
	// Validator verifies the tokens connections present (the stack's
	// tenant); Token returns a workload's client-credentials token from
	// the same tenant. Set both or neither.
	Validator callout.Validator
	Token     func(tb testing.TB, workload string) string
	// Server adjusts the server options (a WebSocket listener ...).
	Server func(*server.Options)
}

// tokens remembers how to get each server's workload tokens; callouts, the
// callout answering it.
var tokens, callouts sync.Map // *server.Server → func(testing.TB, string) string, *callout.Callout

// DevClients maps the development tenant's client ids to their workloads
// ("orders-service" → orders): every workload connecting through the callout.
func DevClients() map[string]string {
	m := map[string]string{}
	for _, w := range mesh.Workloads {
		if !w.AnswersCallout {
			m[w.Name+"-service"] = w.Name
		}
	}
	return m
}

// Start runs a JetStream server with the mesh's configuration and callout
// on a free port, trusting a test issuer of its own; it stops with tb.
func Start(tb testing.TB) *server.Server { return StartWith(tb, Options{}) }

// StartWith is Start with the callout trusting o's validator.
func StartWith(tb testing.TB, o Options) *server.Server {
	tb.Helper()
	conf, err := Config()
	if err != nil {
		tb.Fatal(err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		tb.Fatalf("mesh nats config: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, tb.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	if o.Server != nil {
		o.Server(opts)
	}
	s := natstest.Run(tb, opts)
	ServeCallout(tb, s, o)
	return s
}

// ServeCallout answers s's auth callout (a server started from the mesh's
// configuration elsewhere, e.g. from deploy/nats/nats.conf) as the TTS does,
// with the development keys, until tb ends. o.Server is not used.
func ServeCallout(tb testing.TB, s *server.Server, o Options) {
	tb.Helper()
	if (o.Validator == nil) != (o.Token == nil) {
		tb.Fatal("meshtest: set both Validator and Token, or neither")
	}
	if o.Validator == nil {
		o.Validator, o.Token = testIssuer(tb)
	}
	tokens.Store(s, o.Token)
	tb.Cleanup(func() { tokens.Delete(s) })
	nc := connectOwn(tb, s, mesh.DevKeys.Service, mesh.CalloutWorkload().InboxPrefix())
	c, err := callout.New(callout.Config{Conn: nc, Validator: o.Validator, Clients: DevClients(),
		Keys: mesh.DevKeys, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Start(); err != nil {
		tb.Fatal(err)
	}
	callouts.Store(s, c)
	tb.Cleanup(func() { callouts.Delete(s) })
}

// StopCallout stops answering s's auth callout, once a real Transaction
// Token Service answers it (connections already made stay up).
func StopCallout(s *server.Server) {
	if c, ok := callouts.LoadAndDelete(s); ok {
		c.(*callout.Callout).Stop()
	}
}

// testIssuer is a test tenant: its validator and its workload tokens.
func testIssuer(tb testing.TB) (callout.Validator, func(testing.TB, string) string) {
	iss := authztest.NewIssuer(tb)
	v := Validator(tb, iss.JWKSURL(), iss.Issuer(), authztest.Audience)
	return v, func(tb testing.TB, workload string) string { return iss.M2MToken(tb, workload+"-service", "") }
}

// Validator verifies a test tenant's access tokens as the callout does:
// keys from jwks, the issuer and audience exactly, and opts (revocations).
func Validator(tb testing.TB, jwks, issuer, audience string, opts ...authz.Option) *authz.Validator {
	tb.Helper()
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(jwks))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := authz.NewValidator(keys, append([]authz.Option{authz.WithIssuers(issuer), authz.WithAudiences(audience)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// connectOwn connects one of the callout's own nkey users.
func connectOwn(tb testing.TB, s *server.Server, seed, inbox string) *nats.Conn {
	tb.Helper()
	nk, err := callout.NKey(seed)
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nk, nats.CustomInboxPrefix(inbox))
	if err != nil {
		tb.Fatalf("meshtest: callout connection: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Connect connects as workload the way the services do (its
// client-credentials token through the callout; the TTS with its nkey) and
// returns the connection and its account's JetStream; both close with tb.
func Connect(tb testing.TB, s *server.Server, workload string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	w, ok := mesh.Lookup(workload)
	if !ok {
		tb.Fatalf("no workload %q", workload)
	}
	// The auth callout answers each connect; under -race on a loaded CI
	// machine that takes longer than nats.go's 2 s default.
	opts = append([]nats.Option{nats.CustomInboxPrefix(w.InboxPrefix()), nats.Timeout(15 * time.Second)}, opts...)
	if w.AnswersCallout {
		nk, err := callout.NKey(mesh.DevKeys.Service)
		if err != nil {
			tb.Fatal(err)
		}
		opts = append(opts, nk)
	} else {
		opts = append(opts, nats.Token(Token(tb, s, workload)))
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("connect as %s: %v", workload, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Token is workload's client-credentials token from s's tenant.
func Token(tb testing.TB, s *server.Server, workload string) string {
	tb.Helper()
	f, ok := tokens.Load(s)
	if !ok {
		tb.Fatal("meshtest: not a server Start returned")
	}
	return f.(func(testing.TB, string) string)(tb, workload)
}

// Tail reads a stream from its start, message by message with
// STREAM.MSG.GET: the mesh lets a workload read its own streams so, not
// through consumers of its own.
type Tail struct {
	stream jetstream.Stream
	next   uint64
	wait   time.Duration
}

// NewTail tails stream in js's account; Next waits up to wait for a
// message.
func NewTail(t testing.TB, js jetstream.JetStream, stream string, wait time.Duration) *Tail {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return &Tail{stream: st, next: max(st.CachedInfo().State.FirstSeq, 1), wait: wait}
}

// Next returns the next message, waiting for it.
func (tl *Tail) Next() (*jetstream.RawStreamMsg, error) {
	deadline := time.Now().Add(tl.wait)
	for {
		m, err := tl.stream.GetMsg(context.Background(), tl.next)
		if err == nil {
			tl.next++
			return m, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckEventToken fails the test unless m carries no access token but a
// transaction token v accepts, that workload's client (<workload>-service)
// got for sub, narrowed to m's hop and holding want. It returns the token's
// claims.
func CheckEventToken(t testing.TB, v *authz.TxnValidator, m *jetstream.RawStreamMsg, workload, sub, want string) *authz.Claims {
	t.Helper()
	if h, ok := m.Header[natsauth.HeaderAuthorization]; ok {
		t.Fatalf("%s carries Authorization %q", m.Subject, h)
	}
	c, err := v.Validate(context.Background(), m.Header.Get(natsauth.HeaderTxnToken))
	if err != nil {
		t.Fatalf("%s: Txn-Token: %v", m.Subject, err)
	}
	client := workload + "-service"
	if c.Subject != sub || c.RequestingWorkload != client || !c.HasPermission(want) {
		t.Fatalf("%s: transaction token sub %q, req_wl %q, scope %v; want %s by %s with %s",
			m.Subject, c.Subject, c.RequestingWorkload, c.Permissions, sub, client, want)
	}
	for _, p := range c.Permissions {
		if !slices.Contains(mesh.HopScopes(m.Subject), p) {
			t.Fatalf("%s: scope %s beyond the hop's %v", m.Subject, p, mesh.HopScopes(m.Subject))
		}
	}
	return c
}
