// Package natstest runs in-process nats-servers for tests: one way to start
// a server, wait for it and stop it, for every module's tests.
// pkg/platform/mesh/meshtest builds the mesh's server (its accounts,
// permissions and auth callout) on Run.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run starts a server with opts, waits until it accepts connections and
// shuts it down (waiting for its store to close) when tb ends.
func Run(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// RunJetStream runs a server with JetStream, its store in tb's temporary
// directory, on a free port of 127.0.0.1.
func RunJetStream(tb testing.TB) *server.Server {
	tb.Helper()
	return Run(tb, &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: tb.TempDir(),
		NoLog: true, NoSigs: true,
	})
}

// Connect opens a connection to s and JetStream on it; the connection is
// closed when tb ends.
func Connect(tb testing.TB, s *server.Server, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("nats connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// JetStream is JetStream on a connection to a server of its own
// (RunJetStream), for a test that needs streams or buckets and nothing else.
func JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	_, js := Connect(tb, RunJetStream(tb))
	return js
}
