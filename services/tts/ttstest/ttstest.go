// Package ttstest runs the real Transaction Token Service in-process for
// other components' tests: the same code as the tts binary, on a loopback
// port, against the test's NATS server and tenant. Stack starts those too:
// the in-process NATS with the mesh's accounts and devtenant, which every
// component test of a service stands on, with the other workloads as its
// peers (Stack.Peer) and the service's configuration (Stack.ServiceConfig).
//
//	st := ttstest.NewStack(t, ttstest.StackConfig{})
//	tts := st.StartTTS(t, nil)
//	orders := st.Peer(t, mesh.Orders, ordersEvents) // its stream, its durables
//	cfg := st.ServiceConfig(t, "billing", tts, nil)
package ttstest

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/platformtest"
	"github.com/authmesh/authmesh/services/tts/internal/service"
)

// Config says where the service finds NATS and the tenant.
type Config struct {
	NATSURL string // required
	Issuer  string // the tenant's issuer (AUTH0_ISSUER); required
	JWKSURL string // where the tenant's keys are (AUTH0_JWKS_URL); default <issuer>.well-known/jwks.json
	// Env adds or overrides variables (e.g. ORDERS_CLIENT_ID).
	Env map[string]string
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// TTS is a running service.
type TTS struct {
	URL      string // http://127.0.0.1:port
	JWKSURL  string
	KeysFile string // rotate it with the tts binary's logic: see Rotate
}

// Start runs the service until the test ends and waits until it is ready.
func Start(tb testing.TB, cfg Config) *TTS {
	tb.Helper()
	env := map[string]string{
		"AUTH0_ISSUER":   cfg.Issuer,
		"TTS_NATS_URL":   cfg.NATSURL,
		"TTS_KEYS_FILE":  filepath.Join(tb.TempDir(), "keys.json"),
		"AUTH0_JWKS_URL": cfg.JWKSURL,
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	pc, err := platform.LoadConfig(service.Name, func(k string) string { return env[k] })
	if err != nil {
		tb.Fatalf("ttstest: config: %v", err)
	}
	base, _ := platformtest.Serve(tb, func(ctx context.Context, opts platform.Options) error {
		if cfg.Logger != nil {
			opts.Logger = cfg.Logger
		}
		return service.RunWith(ctx, pc, opts)
	})
	return &TTS{URL: base, JWKSURL: base + "/.well-known/jwks.json", KeysFile: env["TTS_KEYS_FILE"]}
}
