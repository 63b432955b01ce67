package service

import (
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform"
)

// TestReadWindows: TTS_DPOP_PROOF_MAX_AGE and TTS_DPOP_PROOF_FUTURE_SKEW
// set the window of forwarded DPoP proofs, TTS_EVENT_TOKEN_LIFETIME the life
// of event tokens; unset, the defaults apply; a bad value is an error naming
// its variable.
func TestReadWindows(t *testing.T) {
	t.Parallel()
	load := func(env map[string]string) platform.Config {
		cfg, err := platform.LoadConfig(Name, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if w, err := readWindows(load(nil)); err != nil || w != (exchangeWindows{}) {
		t.Fatalf("unset: %+v %v, want the defaults (0)", w, err)
	}
	w, err := readWindows(load(map[string]string{"TTS_DPOP_PROOF_MAX_AGE": "30s", "TTS_DPOP_PROOF_FUTURE_SKEW": " 5s ", "TTS_EVENT_TOKEN_LIFETIME": "2h"}))
	if err != nil || w != (exchangeWindows{ProofMaxAge: 30 * time.Second, ProofFutureSkew: 5 * time.Second, EventLifetime: 2 * time.Hour}) {
		t.Fatalf("set: %+v %v", w, err)
	}
	for _, bad := range [][2]string{
		{"TTS_DPOP_PROOF_MAX_AGE", "1h"},
		{"TTS_DPOP_PROOF_FUTURE_SKEW", "soon"},
		{"TTS_EVENT_TOKEN_LIFETIME", "48h"}, // longer than any receiver accepts
		{"TTS_EVENT_TOKEN_LIFETIME", "5m"},  // shorter than an outage worth riding out
	} {
		name, v := bad[0], bad[1]
		if _, err := readWindows(load(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming it", name, v, err)
		}
	}
	for _, v := range []string{"0s", "-5s"} {
		if _, err := readWindows(load(map[string]string{"TTS_DPOP_PROOF_MAX_AGE": v})); err == nil {
			t.Errorf("max age %s accepted", v)
		}
	}
}
