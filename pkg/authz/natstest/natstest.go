// Package natstest runs in-process nats-servers for tests: one way to start
// a server, wait for it and stop it, for every module's tests.
// pkg/platform/mesh/meshtest builds the mesh's server (its accounts,
// permissions and auth callout) on Run.
package natstest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run starts a server with opts (Start) and shuts it down, waiting for its
// store to close, when tb ends.
func Run(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Start starts a server with opts and waits until it accepts connections;
// stopping it is the caller's (a test that restarts its server in a
// subtest keeps it past that subtest).
func Start(opts *server.Options) (*server.Server, error) {
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats-server not ready")
	}
	return s, nil
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
