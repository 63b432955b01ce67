package devstack

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
// environment, so a stray ORDERS_HTTP_ADDR cannot move a service off its
// contract port or a stray ORDERS_CLIENT_ID give it another service's
// identity, and that no service gets a NATS credential: users, orders and
// billing connect with their client-credentials token, the TTS with its
// development nkeys, which it defaults to.
func TestChildEnv(t *testing.T) {
	t.Setenv("ORDERS_HTTP_ADDR", ":9999")
	t.Setenv("ORDERS_CLIENT_ID", "billing-service")
	for _, svc := range Services {
		env := childEnv("/repo/deploy/tenant.yaml", "/repo/.data", DefaultBindHost, svc, "")
		last := map[string]string{}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			last[k] = v
		}
		p := strings.ToUpper(svc.Name) + "_"
		want := map[string]string{
			p + "HTTP_ADDR":     "127.0.0.1:" + strconv.Itoa(svc.Port),
			p + "NATS_URL":      NATSURL,
			"AUTH0_ISSUER":      "http://localhost:8400/",
			"AUTH0_TENANT_FILE": "/repo/deploy/tenant.yaml",
			"TTS_KEYS_FILE":     "/repo/.data/tts/keys.json",
		}
		if svc.Name != "tts" {
			want[p+"CLIENT_ID"] = svc.Name + "-service"
		}
		for k, w := range want {
			if last[k] != w {
				t.Errorf("%s: %s = %q, want %q", svc.Name, k, last[k], w)
			}
		}
		for k := range last {
			own := slices.ContainsFunc(Services, func(s Service) bool { return strings.HasPrefix(k, strings.ToUpper(s.Name)+"_") })
			if own && (strings.Contains(k, "NATS_USER") || strings.Contains(k, "NATS_PASSWORD") || strings.Contains(k, "SEED")) {
				t.Errorf("%s gets %s: no service has a NATS credential in its environment", svc.Name, k)
			}
		}
	}
}

// TestTTSStartsFirst: the TTS answers the auth callout every other
// service's NATS connection waits for; the others retry until it does, so
// starting it first only saves them the retries.
func TestTTSStartsFirst(t *testing.T) {
	t.Parallel()
	if Services[0].Name != "tts" {
		t.Errorf("services start in the order %v: want the TTS first", Services)
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
	if env := childEnv("/repo/deploy/tenant.yaml", "/repo/.data", "0.0.0.0", Service{"users", 8401}, ""); !slices.Contains(env, "USERS_HTTP_ADDR=0.0.0.0:8401") {
		t.Error("an opened stack does not open the services")
	}
}

// TestNATSConfigListensOnLoopback: deploy/nats/nats.conf, which make run's
// embedded server loads, listens on 127.0.0.1 for clients, monitoring and
// WebSocket, and NATSOptions keeps that when no host is given; an opened
// stack (AUTHMESH_DEV_BIND) opens all three.
func TestNATSConfigListensOnLoopback(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"", "0.0.0.0"} {
		opts, err := NATSOptions("../..", t.TempDir(), host, NATSPort, NATSMonPort, NATSWSPort)
		if err != nil {
			t.Fatal(err)
		}
		want := host
		if want == "" {
			want = "127.0.0.1"
		}
		if opts.Host != want || opts.HTTPHost != want || opts.Websocket.Host != want {
			t.Errorf("bind %q: NATS on %q, monitoring on %q, WebSocket on %q; want %q for all", host, opts.Host, opts.HTTPHost, opts.Websocket.Host, want)
		}
		if opts.Port != NATSPort || opts.HTTPPort != NATSMonPort || opts.Websocket.Port != NATSWSPort || !opts.Websocket.NoTLS {
			t.Errorf("ports %d, %d, %d (ws no_tls %v); want %d, %d, %d and plain ws://", opts.Port, opts.HTTPPort, opts.Websocket.Port,
				opts.Websocket.NoTLS, NATSPort, NATSMonPort, NATSWSPort)
		}
	}
	if !slices.Contains(Ports(), NATSWSPort) {
		t.Errorf("Ports() %v lacks the WebSocket port", Ports())
	}
}

// TestChildEnvTracing: with tracing every service exports to the stack's
// Jaeger, whatever endpoint the caller's shell names; without, the stack
// adds no endpoint of its own.
func TestChildEnvTracing(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318")
	for _, svc := range Services {
		last := func(env []string) string {
			v := ""
			for _, kv := range env {
				if k, val, _ := strings.Cut(kv, "="); k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
					v = val
				}
			}
			return v
		}
		if got := last(childEnv("/repo/deploy/tenant.yaml", "/repo/.data", DefaultBindHost, svc, OTLPEndpoint)); got != "http://localhost:4318" {
			t.Errorf("%s with tracing exports to %q, want http://localhost:4318", svc.Name, got)
		}
		if got := last(childEnv("/repo/deploy/tenant.yaml", "/repo/.data", DefaultBindHost, svc, "")); got != "http://elsewhere:4318" {
			t.Errorf("%s without tracing: endpoint %q, want the caller's untouched", svc.Name, got)
		}
	}
}

// TestConfigTenantFile: the tenant file defaults to the repository's
// deploy/tenant.yaml, a relative one is made absolute (the services run in
// the root), a missing one is an error before anything starts, and the
// services check their routes against the file devtenant serves.
func TestConfigTenantFile(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Root: root}
	if err := c.defaults(); err != nil || c.TenantFile != filepath.Join(root, "deploy", "tenant.yaml") {
		t.Fatalf("default: %q, %v", c.TenantFile, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tenant.yaml"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c = Config{Root: root, TenantFile: "tenant.yaml"}
	if err := c.defaults(); err != nil || c.TenantFile != filepath.Join(dir, "tenant.yaml") {
		t.Fatalf("relative: %q, %v", c.TenantFile, err)
	}
	env := childCommand(context.Background(), c, dir, Services[1], "").Env
	if !slices.Contains(env, "AUTH0_TENANT_FILE="+c.TenantFile) {
		t.Errorf("the services are not given the tenant file devtenant serves (%s)", c.TenantFile)
	}
	c = Config{Root: root, TenantFile: filepath.Join(dir, "missing.yaml")}
	if err := c.defaults(); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing tenant file: %v", err)
	}
}
