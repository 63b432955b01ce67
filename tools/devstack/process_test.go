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
	env := childEnv("/repo", "/repo/.data", DefaultBindHost, Service{"orders", 8402})
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v
	}
	for k, want := range map[string]string{
		"ORDERS_HTTP_ADDR":     "127.0.0.1:8402",
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

// TestBindHost: the stack binds to loopback unless AUTHMESH_DEV_BIND names
// an address deliberately; anything else is refused rather than guessed.
func TestBindHost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env, want string
		ok        bool
	}{
		{"", "127.0.0.1", true},
		{"  ", "127.0.0.1", true},
		{"0.0.0.0", "0.0.0.0", true},
		{"::", "::", true},
		{"localhost", "", false},
		{"0.0.0.0:8400", "", false},
		{"*", "", false},
	} {
		got, err := BindHost(func(k string) string {
			if k == BindEnv {
				return tc.env
			}
			return ""
		})
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s=%q: %q, %v; want %q (ok %v)", BindEnv, tc.env, got, err, tc.want, tc.ok)
		}
	}
	if env := childEnv("/repo", "/repo/.data", "0.0.0.0", Service{"users", 8401}); !slices.Contains(env, "USERS_HTTP_ADDR=0.0.0.0:8401") {
		t.Error("an opened stack does not open the services")
	}
}

// TestNATSConfigListensOnLoopback: deploy/nats/nats.conf, which make run's
// embedded server loads, listens on 127.0.0.1 for clients and monitoring,
// and NATSOptions keeps that when no host is given.
func TestNATSConfigListensOnLoopback(t *testing.T) {
	t.Parallel()
	opts, err := NATSOptions("../..", t.TempDir(), "", NATSPort, NATSMonPort)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Host != "127.0.0.1" || opts.HTTPHost != "127.0.0.1" {
		t.Errorf("nats.conf listens on %q, monitoring on %q; want 127.0.0.1 for both", opts.Host, opts.HTTPHost)
	}
	opts, err = NATSOptions("../..", t.TempDir(), "0.0.0.0", NATSPort, NATSMonPort)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Host != "0.0.0.0" || opts.HTTPHost != "0.0.0.0" {
		t.Errorf("an opened stack: NATS on %q, monitoring on %q", opts.Host, opts.HTTPHost)
	}
}
