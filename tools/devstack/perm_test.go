package devstack

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The variables keys.conf defines and accounts.conf uses.
const (
	issuerVar = "AUTHMESH_CALLOUT_ISSUER"
	xkeyVar   = "AUTHMESH_CALLOUT_XKEY"
	ttsVar    = "TTS_NATS_NKEY"
	ttsSysVar = "TTS_SYS_NKEY"
)

// startTestNATS runs the real deploy/nats configuration on free ports.
// Nobody answers its auth callout.
func startTestNATS(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := NATSOptions(root, t.TempDir(), "127.0.0.1", -1, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartNATS(opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// devKeys reads deploy/nats/keys.conf: the development public keys.
func devKeys(t *testing.T) map[string]string {
	t.Helper()
	m, err := conf.ParseFile("../../deploy/nats/keys.conf")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range []string{issuerVar, xkeyVar, ttsVar, ttsSysVar} {
		v, ok := m[k].(string)
		if !ok || v == "" {
			t.Fatalf("keys.conf does not define %s", k)
		}
		out[k] = v
	}
	return out
}

// TestNATSConfigIsTheCallout: deploy/nats/nats.conf, which make run loads,
// has no password left. The auth callout decides every connection but the
// TTS's two nkey users (its callout connection in account TTS, its kicking
// one in SYS), with keys.conf's development keys.
func TestNATSConfigIsTheCallout(t *testing.T) {
	t.Parallel()
	opts, err := NATSOptions("../..", t.TempDir(), "", NATSPort, NATSMonPort, NATSWSPort)
	if err != nil {
		t.Fatal(err)
	}
	keys := devKeys(t)
	checkCallout(t, opts, keys)
}

// checkCallout checks opts' auth callout and nkey users against keys.
func checkCallout(t *testing.T, opts *server.Options, keys map[string]string) {
	t.Helper()
	ac := opts.AuthCallout
	if ac == nil {
		t.Fatal("no auth callout")
	}
	if ac.Issuer != keys[issuerVar] || ac.XKey != keys[xkeyVar] || ac.Account != "TTS" ||
		!slices.Equal(ac.AuthUsers, []string{keys[ttsVar], keys[ttsSysVar]}) {
		t.Errorf("auth callout %+v, want issuer %s, xkey %s, account TTS, auth users %s and %s",
			*ac, keys[issuerVar], keys[xkeyVar], keys[ttsVar], keys[ttsSysVar])
	}
	if len(opts.Users) != 0 {
		t.Errorf("%d password users, want none", len(opts.Users))
	}
	accounts := map[string]string{}
	for _, u := range opts.Nkeys {
		accounts[u.Nkey] = u.Account.Name
	}
	if want := map[string]string{keys[ttsVar]: "TTS", keys[ttsSysVar]: "SYS"}; !reflect.DeepEqual(accounts, want) {
		t.Errorf("nkey users (key → account) %v, want only the TTS's %v", accounts, want)
	}
}

// TestNATSRefusesWithoutTheCallout: with nobody answering the callout (the
// TTS down), nothing else gets in: no anonymous connection, no password
// (the old dev ones included), no token, no nkey but the TTS's.
func TestNATSRefusesWithoutTheCallout(t *testing.T) {
	t.Parallel()
	url := startTestNATS(t)
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := stranger.Seed()
	strangerOpt, err := nats.NkeyOptionFromSeed(writeSeed(t, seed))
	if err != nil {
		t.Fatal(err)
	}
	for name, opt := range map[string]nats.Option{
		"anonymous":          func(*nats.Options) error { return nil },
		"old dev password":   nats.UserInfo("billing", "billing-nats-dev-secret"),
		"token":              nats.Token("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
		"nkey not the TTS's": strangerOpt,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			nc, err := nats.Connect(url, opt, nats.Timeout(5*time.Second))
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			// Nobody answers the callout here, so the server refuses when
			// its authorization timeout ends: the client usually reads
			// "Authorization Violation", or, when the server's closing
			// races its handshake, sees the handshake fail. Either way it
			// is not in.
			t.Logf("refused: %v", err)
		})
	}
}

func writeSeed(t *testing.T, seed []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "seed.nk")
	if err := os.WriteFile(f, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestNATSKubernetesConfig loads the cluster configuration deploy/k8s/nats
// mounts: keys-env.conf as keys.conf, so the callout's public keys come
// from the environment (a missing one is an error, never a development
// default), and the accounts are the same generated ones make run uses.
func TestNATSKubernetesConfig(t *testing.T) {
	env := map[string]string{}
	for _, k := range []string{issuerVar, xkeyVar, ttsVar, ttsSysVar} {
		var kp nkeys.KeyPair
		var err error
		switch k {
		case issuerVar:
			kp, err = nkeys.CreateAccount()
		case xkeyVar:
			kp, err = nkeys.CreateCurveKeys()
		default:
			kp, err = nkeys.CreateUser()
		}
		if err != nil {
			t.Fatal(err)
		}
		if env[k], err = kp.PublicKey(); err != nil {
			t.Fatal(err)
		}
	}
	// Kubernetes mounts keys-env.conf as keys.conf (deploy/nats/kustomization.yaml).
	dir := t.TempDir()
	for dst, src := range map[string]string{"cluster-k8s.conf": "cluster-k8s.conf", "accounts.conf": "accounts.conf", "keys.conf": "keys-env.conf"} {
		b, err := os.ReadFile("../../deploy/nats/" + src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k8sConf := filepath.Join(dir, "cluster-k8s.conf")
	// The route password is present throughout: what is checked first is
	// the callout's keys (mesh's routes_test checks the password).
	t.Setenv("NATS_ROUTE_PASSWORD", "test-route-password")
	for k := range env {
		t.Setenv(k, "") // restored when the test ends
		os.Unsetenv(k)
	}
	if _, err := server.ProcessConfigFile(k8sConf); err == nil || !strings.Contains(err.Error(), "AUTHMESH_CALLOUT") {
		t.Errorf("without the keys in the environment: %v, want an error naming the missing variable", err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	k8s, err := server.ProcessConfigFile(k8sConf)
	if err != nil {
		t.Fatal(err)
	}
	checkCallout(t, k8s, env)
	dev, err := server.ProcessConfigFile("../../deploy/nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	if dev.AuthCallout.Issuer == k8s.AuthCallout.Issuer {
		t.Error("the Kubernetes configuration has the development issuer key")
	}
	names := func(o *server.Options) []string {
		var n []string
		for _, a := range o.Accounts {
			n = append(n, a.Name)
		}
		slices.Sort(n)
		return n
	}
	if !slices.Equal(names(k8s), names(dev)) || len(names(dev)) < 5 {
		t.Errorf("accounts: k8s %v, dev %v; want the same", names(k8s), names(dev))
	}
	if k8s.SystemAccount != "SYS" || dev.SystemAccount != "SYS" {
		t.Errorf("system account: k8s %q, dev %q", k8s.SystemAccount, dev.SystemAccount)
	}
	if w := k8s.Websocket; w.Host != "0.0.0.0" || w.Port != 8405 || !w.NoTLS {
		t.Errorf("k8s websocket %s:%d (no_tls %v), want plain 0.0.0.0:8405 (TLS ends in front of it)", w.Host, w.Port, w.NoTLS)
	}
	// The routes, with the password, are the StatefulSet's args
	// (tests/deploy); the file requires the password of every route.
	if k8s.Cluster.Name != "authmesh" || k8s.Cluster.Username != "route" || k8s.Cluster.Password != "test-route-password" {
		t.Errorf("cluster %q, route user %q, password from the environment %v; want authmesh, route, true",
			k8s.Cluster.Name, k8s.Cluster.Username, k8s.Cluster.Password == "test-route-password")
	}
}
