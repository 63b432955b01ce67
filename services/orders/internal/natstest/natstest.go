// Package natstest is pkg/authz/natstest's JetStream server and connection
// in the shape orders' tests use.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

// Server is a running in-process server and a connection to it.
type Server struct {
	*server.Server
	NC *nats.Conn
	JS jetstream.JetStream
}

// Start runs a JetStream-enabled server on a random port; it stops with t.
func Start(t testing.TB) *Server {
	t.Helper()
	s := natstest.RunJetStream(t)
	nc, js := natstest.Connect(t, s)
	return &Server{Server: s, NC: nc, JS: js}
}
