package platform

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
)

// TestDPoPConfig: the <P>DPOP_* variables, valid values read as documented
// (docs/conventions.md), each invalid one refused with an error naming the
// variable and what it accepts.
func TestDPoPConfig(t *testing.T) {
	t.Parallel()
	key32 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c authz.DPoPConfig)
		wantErr []string // substrings of the error; nil: no error
	}{
		{name: "defaults", env: nil, check: func(t *testing.T, c authz.DPoPConfig) {
			if c.Mode != authz.DPoPAllowed || c.Origin != "" || c.TrustForwarded || c.Nonces != nil {
				t.Errorf("%+v, want allowed, no origin, no forwarding, no nonces", c)
			}
		}},
		{name: "allowed", env: map[string]string{"ORDERS_DPOP_MODE": "allowed"}, check: mode(authz.DPoPAllowed)},
		{name: "required, any case and space", env: map[string]string{"ORDERS_DPOP_MODE": " Required "}, check: mode(authz.DPoPRequired)},
		{name: "disabled", env: map[string]string{"ORDERS_DPOP_MODE": "DISABLED"}, check: mode(authz.DPoPDisabled)},
		{name: "unknown mode", env: map[string]string{"ORDERS_DPOP_MODE": "optional"},
			wantErr: []string{`ORDERS_DPOP_MODE "optional"`, "want allowed, required or disabled"}},
		{name: "mode given as a number", env: map[string]string{"ORDERS_DPOP_MODE": "1"},
			wantErr: []string{"ORDERS_DPOP_MODE", "want allowed, required or disabled"}},
		{name: "origin", env: map[string]string{"ORDERS_DPOP_ORIGIN": "https://api.example.com/orders"}, check: func(t *testing.T, c authz.DPoPConfig) {
			if c.Origin != "https://api.example.com/orders" {
				t.Errorf("origin %q", c.Origin)
			}
		}},
		{name: "origin without a scheme", env: map[string]string{"ORDERS_DPOP_ORIGIN": "api.example.com"},
			wantErr: []string{`ORDERS_DPOP_ORIGIN "api.example.com"`, "absolute http(s) URL"}},
		{name: "origin of another scheme", env: map[string]string{"ORDERS_DPOP_ORIGIN": "ftp://api.example.com"},
			wantErr: []string{"ORDERS_DPOP_ORIGIN", "absolute http(s) URL"}},
		{name: "origin with a query", env: map[string]string{"ORDERS_DPOP_ORIGIN": "https://api.example.com/?x=1"},
			wantErr: []string{"ORDERS_DPOP_ORIGIN", "without query"}},
		{name: "trust forwarded", env: map[string]string{"ORDERS_DPOP_TRUST_FORWARDED": "TRUE"}, check: func(t *testing.T, c authz.DPoPConfig) {
			if !c.TrustForwarded {
				t.Error("TrustForwarded false")
			}
		}},
		{name: "trust forwarded false", env: map[string]string{"ORDERS_DPOP_TRUST_FORWARDED": "false"}, check: func(t *testing.T, c authz.DPoPConfig) {
			if c.TrustForwarded {
				t.Error("TrustForwarded true")
			}
		}},
		{name: "trust forwarded yes", env: map[string]string{"ORDERS_DPOP_TRUST_FORWARDED": "yes"},
			wantErr: []string{`ORDERS_DPOP_TRUST_FORWARDED "yes"`, "want true or false"}},
		{name: "origin and trust forwarded", env: map[string]string{"ORDERS_DPOP_ORIGIN": "https://api.example.com", "ORDERS_DPOP_TRUST_FORWARDED": "true"},
			wantErr: []string{"ORDERS_DPOP_ORIGIN and ORDERS_DPOP_TRUST_FORWARDED", "set one"}},
		{name: "nonce key", env: map[string]string{"ORDERS_DPOP_NONCE_KEY": key32}, check: func(t *testing.T, c authz.DPoPConfig) {
			if c.Nonces == nil {
				t.Error("no nonces")
			}
		}},
		{name: "nonce key not base64", env: map[string]string{"ORDERS_DPOP_NONCE_KEY": "not base64!"},
			wantErr: []string{"ORDERS_DPOP_NONCE_KEY: not base64"}},
		{name: "nonce key base64url", env: map[string]string{"ORDERS_DPOP_NONCE_KEY": strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xfb", 32))))},
			wantErr: []string{"ORDERS_DPOP_NONCE_KEY: not base64"}},
		{name: "nonce key too short", env: map[string]string{"ORDERS_DPOP_NONCE_KEY": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 31)))},
			wantErr: []string{"ORDERS_DPOP_NONCE_KEY", "at least 32 bytes"}},
		{name: "another service's variables are not read", env: map[string]string{"BILLING_DPOP_MODE": "bogus", "DPOP_MODE": "bogus"}, check: mode(authz.DPoPAllowed)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Config{Prefix: "ORDERS_", getenv: envOf(tc.env)}
			cfg, err := dpopConfig(c.Prefix, c.Getenv)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one saying %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
			// What it read builds a verifier.
			cfg.Replay = authz.NewMemoryReplayCache()
			if _, err := authz.NewDPoP(cfg); err != nil {
				t.Fatalf("NewDPoP: %v", err)
			}
		})
	}
}

func mode(want authz.DPoPMode) func(*testing.T, authz.DPoPConfig) {
	return func(t *testing.T, c authz.DPoPConfig) {
		if c.Mode != want {
			t.Errorf("mode %d, want %d", c.Mode, want)
		}
	}
}
