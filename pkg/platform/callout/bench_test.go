package callout_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// BenchmarkNATSConnect is what a NATS connection costs to open (nats.Connect
// and the first Flush: CONNECT, the server's verdict, one PING/PONG), next to
// a password connect in the same run:
//
//   - password, password-websocket: an in-process nats-server with a plain
//     configuration, one account with JetStream and one user with a
//     plain-text password (as deploy/nats/passwords.conf had);
//   - callout-*: an in-process nats-server with the mesh's configuration
//     (meshtest.StartWith: accounts, auth_callout, xkey), answered by
//     callout.New as the Transaction Token Service answers it, with an
//     authz.Validator (revocations included) trusting a test tenant whose
//     JWKS is served over loopback (authztest).
//
// The callout variants:
//
//   - callout-workload-cold: orders' client-credentials token, a new one each
//     connection, so the validator checks its RS256 signature and claims
//     (the JWKS is already cached, as in a running TTS);
//   - callout-workload-warm: the same token each time (the validator's cache
//     of verified tokens answers);
//   - callout-jwks-cold: a new validator each connection, as the first
//     connection after the TTS starts: the validator fetches the JWKS first;
//   - callout-person-websocket-warm: a person's access token over WebSocket,
//     the same each time (to compare with password-websocket).
//
// The callout variants report x-callout-decision-us: the mean of the
// callout's own nats_callout_seconds histogram over the timed connections
// (opening the request, validating, signing and sealing the user JWT).
// Connections are opened in batches and closed between batches outside the
// timer (until the server has let them go), so that minting tokens, creating
// validators and closing connections are not measured.
func BenchmarkNATSConnect(b *testing.B) {
	pw := startPassword(b)
	m := startMesh(b)

	b.Run("password", func(b *testing.B) {
		opt := nats.UserInfo(benchUser, benchPassword)
		benchConnect(b, pw, pw.ClientURL(), connectBatch, func(int) []nats.Option { return []nats.Option{opt} })
	})
	b.Run("password-websocket", func(b *testing.B) {
		opt := nats.UserInfo(benchUser, benchPassword)
		benchConnect(b, pw, pw.WebsocketURL(), connectBatch, func(int) []nats.Option { return []nats.Option{opt} })
	})
	b.Run("callout-workload-cold", func(b *testing.B) {
		m.freshValidator(b)
		m.warmUp(b, m.s.ClientURL(), m.workloadToken(b)) // the JWKS, cached
		m.measureDecisions(b, func() {
			benchConnect(b, m.s, m.s.ClientURL(), connectBatch, func(int) []nats.Option {
				return []nats.Option{nats.Token(m.workloadToken(b))}
			})
		})
	})
	b.Run("callout-workload-warm", func(b *testing.B) {
		m.freshValidator(b)
		tok := m.workloadToken(b)
		m.warmUp(b, m.s.ClientURL(), tok)
		m.measureDecisions(b, func() {
			benchConnect(b, m.s, m.s.ClientURL(), connectBatch, func(int) []nats.Option { return []nats.Option{nats.Token(tok)} })
		})
	})
	b.Run("callout-jwks-cold", func(b *testing.B) {
		tok := m.workloadToken(b)
		fetches := m.iss.Fetches()
		m.measureDecisions(b, func() {
			// One connection per batch: each gets a validator that has
			// fetched nothing yet.
			benchConnect(b, m.s, m.s.ClientURL(), 1, func(int) []nats.Option {
				m.freshValidator(b)
				return []nats.Option{nats.Token(tok)}
			})
		})
		if got := m.iss.Fetches() - fetches; got < int64(b.N) {
			b.Fatalf("%d JWKS fetches for %d connections: the JWKS was cached", got, b.N)
		}
	})
	b.Run("callout-person-websocket-warm", func(b *testing.B) {
		m.freshValidator(b)
		tok := m.iss.Token(b, authztest.Claims{"sub": "auth0|bench-alice", "permissions": []string{"read:orders", "read:invoices"}})
		m.warmUp(b, m.s.WebsocketURL(), tok)
		m.measureDecisions(b, func() {
			benchConnect(b, m.s, m.s.WebsocketURL(), connectBatch, func(int) []nats.Option { return []nats.Option{nats.Token(tok)} })
		})
	})
}

const (
	benchUser     = "bench"
	benchPassword = "bench-nats-dev-secret"
	// connectBatch connections are opened between two pauses of the timer.
	connectBatch = 32
)

// benchConnect opens b.N connections to url, batch at a time; prepare gives
// each connection of the next batch its options, outside the timer.
func benchConnect(b *testing.B, s *server.Server, url string, batch int, prepare func(i int) []nats.Option) {
	b.Helper()
	idle := s.NumClients()
	conns := make([]*nats.Conn, 0, batch)
	opts := make([][]nats.Option, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		closeAll(b, s, idle, conns)
		conns = conns[:0]
		n := min(batch, b.N-i)
		for j := range n {
			opts[j] = append(prepare(i+j), nats.NoReconnect())
		}
		b.StartTimer()
		for j := range n {
			nc, err := nats.Connect(url, opts[j]...)
			if err != nil {
				b.Fatalf("connect %s: %v", url, err)
			}
			if err := nc.Flush(); err != nil {
				b.Fatalf("flush: %v", err)
			}
			conns = append(conns, nc)
		}
	}
	b.StopTimer()
	closeAll(b, s, idle, conns)
}

// closeAll closes conns and waits until s has let them go (back to idle
// clients), so that the next batch does not share the CPU with their
// teardown.
func closeAll(b *testing.B, s *server.Server, idle int, conns []*nats.Conn) {
	for _, nc := range conns {
		nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.NumClients() > idle {
		if time.Now().After(deadline) {
			b.Fatalf("%d clients still connected, want %d", s.NumClients(), idle)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// startPassword runs the baseline: a plain configuration, one password user.
func startPassword(b *testing.B) *server.Server {
	b.Helper()
	opts := &server.Options{}
	conf := fmt.Sprintf(`accounts { APP: { jetstream: enabled, users: [ { user: %q, password: %q } ] } }`, benchUser, benchPassword)
	if err := opts.ProcessConfigString(conf); err != nil {
		b.Fatal(err)
	}
	configure(b, opts)
	return natstest.Run(b, opts)
}

// configure gives both servers the same listeners and JetStream.
func configure(b *testing.B, o *server.Options) {
	o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	o.JetStream, o.StoreDir = true, b.TempDir()
	o.NoLog, o.NoSigs = true, true
	o.Websocket.Host, o.Websocket.Port, o.Websocket.NoTLS = "127.0.0.1", -1, true
}

// meshServer is the mesh's server with a callout whose validator a
// benchmark can replace (a new one has an empty token cache and no JWKS).
type meshServer struct {
	s       *server.Server
	iss     *authztest.Issuer
	revoked *authztest.Revocations
	v       swapValidator
	reg     *prometheus.Registry
}

func startMesh(b *testing.B) *meshServer {
	b.Helper()
	m := &meshServer{iss: authztest.NewIssuer(b), revoked: &authztest.Revocations{}, reg: prometheus.NewRegistry()}
	m.freshValidator(b)
	m.s = meshtest.StartWith(b, meshtest.Options{
		Validator: &m.v,
		Token:     func(tb testing.TB, w string) string { return m.iss.M2MToken(tb, w+"-service", "") },
		Server:    func(o *server.Options) { configure(b, o) },
	})
	// meshtest's callout has no metrics registry: answer with one of our
	// own, configured as the TTS configures its callout.
	meshtest.StopCallout(m.s)
	nk, err := callout.NKey(mesh.DevKeys.Service)
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(m.s.ClientURL(), nk, nats.CustomInboxPrefix(mesh.CalloutWorkload().InboxPrefix()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	c, err := callout.New(callout.Config{Conn: nc, Validator: &m.v, Clients: meshtest.DevClients(),
		Keys: mesh.DevKeys, Logger: slog.New(slog.DiscardHandler), Registry: m.reg})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	return m
}

// freshValidator makes the callout use a new validator: nothing cached, no
// JWKS fetched.
func (m *meshServer) freshValidator(b *testing.B) {
	m.v.p.Store(meshtest.Validator(b, m.iss.JWKSURL(), m.iss.Issuer(), authztest.Audience, authz.WithRevocations(m.revoked)))
}

var tokenSeq atomic.Int64

// workloadToken is a client-credentials token of orders no other call
// returns (its jti differs).
func (m *meshServer) workloadToken(b *testing.B) string {
	return m.iss.Token(b, authztest.Claims{
		"sub": "orders-service@clients", "azp": "orders-service", "gty": "client-credentials",
		"scope": "", "aud": authztest.Audience, "permissions": nil, "https://authmesh.dev/roles": nil,
		"jti": fmt.Sprintf("bench-%d", tokenSeq.Add(1)),
	})
}

// warmUp connects once with tok, so that the validator has the JWKS and tok.
func (m *meshServer) warmUp(b *testing.B, url, tok string) {
	b.Helper()
	nc, err := nats.Connect(url, nats.Token(tok), nats.NoReconnect())
	if err != nil {
		b.Fatalf("warm-up connect %s: %v", url, err)
	}
	nc.Close()
}

// measureDecisions runs f and reports the mean callout decision time over
// the decisions made during it.
func (m *meshServer) measureDecisions(b *testing.B, f func()) {
	b.Helper()
	sum0, n0 := m.decisions(b)
	f()
	sum1, n1 := m.decisions(b)
	if n1 < n0+uint64(b.N) {
		b.Fatalf("%d callout decisions for %d connections", n1-n0, b.N)
	}
	b.ReportMetric((sum1-sum0)/float64(n1-n0)*1e6, "x-callout-decision-us")
}

// decisions reads the callout's nats_callout_seconds histogram: the sum of
// the decision times in seconds and their count.
func (m *meshServer) decisions(b *testing.B) (float64, uint64) {
	mfs, err := m.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "nats_callout_seconds" && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount()
		}
	}
	b.Fatal("no nats_callout_seconds histogram")
	return 0, 0
}

// swapValidator is the callout's validator, replaceable between connections.
type swapValidator struct {
	p atomic.Pointer[authz.Validator]
}

func (s *swapValidator) Validate(ctx context.Context, token string) (*authz.Claims, error) {
	return s.p.Load().Validate(ctx, token)
}
