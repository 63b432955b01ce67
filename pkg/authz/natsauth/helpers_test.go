package natsauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// startNATS runs an in-process nats-server with JetStream in a temp dir.
func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  tb.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func connect(tb testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// newValidator returns a real authz.Validator fed by the test issuer's JWKS.
func newValidator(tb testing.TB, iss *authztest.Issuer, opts ...authz.Option) *authz.Validator {
	tb.Helper()
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(iss.JWKSURL()))
	if err != nil {
		tb.Fatalf("key provider: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if err := keys.Start(ctx); err != nil {
		tb.Fatalf("keys: %v", err)
	}
	all := append([]authz.Option{authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience)}, opts...)
	v, err := authz.NewValidator(keys, all...)
	if err != nil {
		tb.Fatalf("validator: %v", err)
	}
	return v
}

// userCtx is what the HTTP middleware hands a handler: claims plus token.
func userCtx(tb testing.TB, v *authz.Validator, tok string) context.Context {
	tb.Helper()
	claims, err := v.Validate(context.Background(), tok)
	if err != nil {
		tb.Fatalf("validate test token: %v", err)
	}
	return authz.WithClaims(context.Background(), claims, tok)
}

var (
	foreignOnce sync.Once
	foreignKey  *rsa.PrivateKey
)

// foreignRSAKey is a key the issuer never published.
func foreignRSAKey(tb testing.TB) *rsa.PrivateKey {
	foreignOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			tb.Fatalf("rsa: %v", err)
		}
		foreignKey = k
	})
	return foreignKey
}

func eventually(tb testing.TB, within time.Duration, cond func() bool, msg string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", within, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
