package service

import (
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform"
)

// TestProofWindow: TTS_DPOP_PROOF_MAX_AGE and TTS_DPOP_PROOF_FUTURE_SKEW
// set the window of forwarded DPoP proofs; unset, the defaults apply; a bad
// value is an error naming its variable.
func TestProofWindow(t *testing.T) {
	t.Parallel()
	load := func(env map[string]string) platform.Config {
		cfg, err := platform.LoadConfig("tts", func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if a, s, err := proofWindow(load(nil)); err != nil || a != 0 || s != 0 {
		t.Fatalf("unset: %v %v %v, want the defaults (0)", a, s, err)
	}
	if a, s, err := proofWindow(load(map[string]string{"TTS_DPOP_PROOF_MAX_AGE": "30s", "TTS_DPOP_PROOF_FUTURE_SKEW": " 5s "})); err != nil || a != 30*time.Second || s != 5*time.Second {
		t.Fatalf("set: %v %v %v", a, s, err)
	}
	for name, v := range map[string]string{
		"TTS_DPOP_PROOF_MAX_AGE":     "1h",
		"TTS_DPOP_PROOF_FUTURE_SKEW": "soon",
	} {
		if _, _, err := proofWindow(load(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming it", name, v, err)
		}
	}
	for _, v := range []string{"0s", "-5s"} {
		if _, _, err := proofWindow(load(map[string]string{"TTS_DPOP_PROOF_MAX_AGE": v})); err == nil {
			t.Errorf("max age %s accepted", v)
		}
	}
}
