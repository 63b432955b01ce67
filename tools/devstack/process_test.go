package devstack

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestPrefixWriter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"whole lines", []string{"a\nb\n"}, "users     | a\nusers     | b\n"},
		{"split line", []string{"hel", "lo\nwor", "ld\n"}, "users     | hello\nusers     | world\n"},
		{"unterminated tail held back", []string{"x\ny"}, "users     | x\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			w := prefixWriter(&out, "users")
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if out.String() != tc.want {
				t.Errorf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
}

// TestChildEnv checks that the stack's settings win over the caller's
// environment, so a stray USERS_HTTP_ADDR cannot move a service off its
// contract port or give it another service's NATS user.
func TestChildEnv(t *testing.T) {
	t.Setenv("ORDERS_HTTP_ADDR", ":9999")
	t.Setenv("ORDERS_NATS_USER", "billing")
	env := childEnv("/repo", "/repo/.data", Service{"orders", 8402})
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v
	}
	for k, want := range map[string]string{
		"ORDERS_HTTP_ADDR":     ":8402",
		"ORDERS_NATS_USER":     "orders",
		"ORDERS_NATS_PASSWORD": "orders-nats-dev-secret",
		"ORDERS_CLIENT_ID":     "orders-service",
		"AUTH0_ISSUER":         "http://localhost:8400/",
		"AUTH0_TENANT_FILE":    "/repo/deploy/tenant.yaml",
		"TTS_KEYS_FILE":        "/repo/.data/tts/keys.json",
	} {
		if last[k] != want {
			t.Errorf("%s = %q, want %q", k, last[k], want)
		}
	}
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "USERS_NATS_PASSWORD=") }) {
		t.Error("orders gets users' NATS password")
	}
}
