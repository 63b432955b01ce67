// Package meshtest runs an in-process nats-server with the mesh's accounts,
// users and permissions (the configuration deploy/nats/accounts.conf holds,
// with the development passwords), so component tests see the same
// isolation as make run, compose and Kubernetes.
package meshtest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// Config is the server configuration: the dev passwords, then the accounts.
func Config() (string, error) {
	var pw, acc bytes.Buffer
	if err := mesh.WriteDevPasswords(&pw); err != nil {
		return "", err
	}
	if err := mesh.WriteNATSConfig(&acc); err != nil {
		return "", err
	}
	return strings.Replace(acc.String(), "include passwords.conf\n", pw.String(), 1), nil
}

// Start runs a JetStream server with the mesh's accounts on a free port; it
// stops with t.
func Start(t testing.TB) *server.Server {
	t.Helper()
	conf, err := Config()
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("mesh nats config: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect connects as workload, with its dev password and inbox prefix, and
// returns the connection and its account's JetStream; both close with t.
func Connect(t testing.TB, s *server.Server, workload string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	w, ok := mesh.Lookup(workload)
	if !ok {
		t.Fatalf("no workload %q", workload)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(w.Name, w.DevPassword()), nats.CustomInboxPrefix(w.InboxPrefix()))
	if err != nil {
		t.Fatalf("connect as %s: %v", workload, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
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
