package service_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/service"
	"github.com/authmesh/authmesh/services/tts/ttstest"
)

// TestWireErrorClosesNATS: a configuration refused once platform is up
// (here an event token lifetime below its bound) leaves no NATS connection
// behind.
func TestWireErrorClosesNATS(t *testing.T) {
	st := ttstest.NewStack(t, ttstest.StackConfig{})
	idle := st.NATS.NumClients()
	env := map[string]string{
		"AUTH0_ISSUER":             st.Issuer,
		"AUTH0_JWKS_URL":           st.JWKSURL,
		"TTS_NATS_URL":             st.NATS.ClientURL(),
		"TTS_KEYS_FILE":            filepath.Join(t.TempDir(), "keys.json"),
		"TTS_EVENT_TOKEN_LIFETIME": "1m",
	}
	cfg, err := platform.LoadConfig(service.Name, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	err = service.RunWith(context.Background(), cfg, platform.Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		t.Fatal("RunWith accepted TTS_EVENT_TOKEN_LIFETIME=1m")
	}
	for deadline := time.Now().Add(5 * time.Second); st.NATS.NumClients() > idle; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d NATS clients after RunWith failed (%v), want %d", st.NATS.NumClients(), err, idle)
		}
	}
}
