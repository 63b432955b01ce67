package ttstest

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// Peer is another workload as a service's component test plays it: its
// connection and JetStream in its own account, and its TTS client, which
// exchanges tokens as that workload does (its own M2M token as the actor).
type Peer struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	Txn *natsauth.TxnClient
}

// Peer connects as workload (client <workload>-service, as the mesh names
// it) and creates in its place what it owns that the service under test
// binds to: streams and, when there are any, the durables the mesh
// provisions in its account. Its connection is authorized as any other:
// by meshtest's callout before StartTTS, by the TTS's after it.
func (s *Stack) Peer(tb testing.TB, workload string, streams ...jetstream.StreamConfig) *Peer {
	tb.Helper()
	nc, js := meshtest.Connect(tb, s.NATS, workload)
	ctx := context.Background()
	for _, st := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, st); err != nil {
			tb.Fatalf("ttstest: %s's stream %s: %v", workload, st.Name, err)
		}
	}
	if len(streams) > 0 {
		if err := mesh.ProvisionDurables(ctx, js, workload); err != nil {
			tb.Fatalf("ttstest: %s's durables: %v", workload, err)
		}
	}
	return &Peer{NC: nc, JS: js, Txn: s.TxnClient(tb, nc, workload+"-service")}
}

// Outbound is the context p sends under while serving token's holder: the
// access token, exchanged by p's TTS client for a transaction token narrowed
// to each message's hop; "" is no identity (natsauth.AsService, or nothing).
func (p *Peer) Outbound(ctx context.Context, token string) context.Context {
	ctx = natsauth.WithOutbound(ctx, &natsauth.Outbound{Exchanger: p.Txn, Scopes: mesh.HopScopes})
	if token == "" {
		return ctx
	}
	return authz.WithClaims(ctx, nil, token)
}

// ServiceConfig is service's configuration on the stack, as its
// environment would give it: the tenant's issuer and file, the NATS server
// (<SERVICE>_NATS_URL) and the keys of tts; env adds or overrides
// variables.
func (s *Stack) ServiceConfig(tb testing.TB, service string, tts *TTS, env map[string]string) platform.Config {
	tb.Helper()
	vars := map[string]string{
		"AUTH0_ISSUER":                         s.Issuer,
		"AUTH0_TENANT_FILE":                    s.TenantFile,
		strings.ToUpper(service) + "_NATS_URL": s.NATS.ClientURL(),
		"AUTHMESH_TTS_JWKS_URL":                tts.JWKSURL,
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := platform.LoadConfig(service, func(k string) string { return vars[k] })
	if err != nil {
		tb.Fatalf("ttstest: %s's configuration: %v", service, err)
	}
	return cfg
}
