// Package ttstest runs the real Transaction Token Service in-process for
// other components' tests: the same code as the tts binary, on a loopback
// port, against the test's NATS server and tenant.
//
//	tts := ttstest.Start(t, ttstest.Config{NATSURL: ns.ClientURL(), Issuer: issuer, JWKSURL: jwks})
//	env["AUTHMESH_TTS_JWKS_URL"] = tts.JWKSURL
package ttstest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/service"
)

// Config says where the service finds NATS and the tenant.
type Config struct {
	NATSURL string // required
	Issuer  string // the tenant's issuer (AUTH0_ISSUER); required
	JWKSURL string // where the tenant's keys are (AUTH0_JWKS_URL); default <issuer>.well-known/jwks.json
	// Env adds or overrides variables (e.g. TTS_NATS_USER, ORDERS_CLIENT_ID).
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
	dir := tb.TempDir()
	env := map[string]string{
		"AUTH0_ISSUER":   cfg.Issuer,
		"TTS_NATS_URL":   cfg.NATSURL,
		"TTS_KEYS_FILE":  filepath.Join(dir, "keys.json"),
		"AUTH0_JWKS_URL": cfg.JWKSURL,
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	pc, err := platform.LoadConfig("tts", func(k string) string { return env[k] })
	if err != nil {
		tb.Fatalf("ttstest: config: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("ttstest: listen: %v", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- service.RunWith(ctx, pc, platform.Options{Listener: ln, Logger: log}) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("ttstest: run: %v", err)
		}
	})
	t := &TTS{URL: "http://" + ln.Addr().String(), KeysFile: env["TTS_KEYS_FILE"]}
	t.JWKSURL = t.URL + "/.well-known/jwks.json"
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(t.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return t
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("ttstest: not ready within 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
