package natskeys_test

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/tts/internal/natskeys"
)

// readEnv parses a KEY=value file, skipping comments.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=value", path, line)
		}
		env[k] = v
	}
	return env
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	a, err := natskeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := natskeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	// Public checks each seed is of its kind (account, curve, user, user).
	if _, err := a.Public(); err != nil {
		t.Fatalf("generated keys: %v", err)
	}
	if a.Service == a.System {
		t.Error("the TTS's two users share one key")
	}
	for i, pair := range [][2]string{{a.Issuer, b.Issuer}, {a.XKey, b.XKey}, {a.Service, b.Service}, {a.System, b.System}} {
		if pair[0] == pair[1] {
			t.Errorf("key %d is the same in two runs", i)
		}
	}
	for _, s := range []string{a.Issuer, a.XKey, a.Service, a.System} {
		if s == mesh.DevKeys.Issuer || s == mesh.DevKeys.XKey || s == mesh.DevKeys.Service || s == mesh.DevKeys.System {
			t.Error("a generated key is a published development key")
		}
	}
}

// TestWrite checks the two files: the seeds private to their owner and
// exactly what the TTS's configuration reads, the public halves exactly
// what the servers' accounts.conf names, nothing secret in the public one.
func TestWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k, err := natskeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := natskeys.Write(dir, k)
	if err != nil {
		t.Fatal(err)
	}

	seedsPath := filepath.Join(dir, natskeys.SeedsFile)
	fi, err := os.Stat(seedsPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", natskeys.SeedsFile, fi.Mode().Perm())
	}
	seeds := readEnv(t, seedsPath)
	if len(seeds) != 4 {
		t.Errorf("%s holds %d variables, want the 4 seeds: %v", natskeys.SeedsFile, len(seeds), keysOf(seeds))
	}
	// The TTS's own configuration, loaded as in production (a real tenant,
	// so no development default could fill a misnamed variable).
	env := map[string]string{"AUTH0_DOMAIN": "example.eu.auth0.com", "USERS_CLIENT_ID": "u", "ORDERS_CLIENT_ID": "o", "BILLING_CLIENT_ID": "b"}
	for name, v := range seeds {
		env[name] = v
	}
	cfg, err := platform.LoadConfig(platform.TokenServiceName, func(name string) string { return env[name] })
	if err != nil {
		t.Fatalf("the TTS does not load %s: %v", natskeys.SeedsFile, err)
	}
	if cfg.Callout != k {
		t.Error("the TTS loads other keys than the ones generated")
	}

	public := readEnv(t, filepath.Join(dir, natskeys.PublicFile))
	accounts, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := pub.Vars()
	if len(public) != len(want) {
		t.Errorf("%s holds %v, want %d public keys", natskeys.PublicFile, keysOf(public), len(want))
	}
	for _, v := range want {
		if public[v[0]] != v[1] {
			t.Errorf("%s: %s = %q, want %q", natskeys.PublicFile, v[0], public[v[0]], v[1])
		}
		if !strings.Contains(string(accounts), "$"+v[0]) {
			t.Errorf("deploy/nats/accounts.conf does not use $%s", v[0])
		}
	}
	for name, v := range public {
		if _, err := nkeys.FromSeed([]byte(v)); err == nil {
			t.Errorf("%s: %s is a seed", natskeys.PublicFile, name)
		}
		if !nkeys.IsValidPublicKey(v) {
			t.Errorf("%s: %s = %q is not a public key", natskeys.PublicFile, name, v)
		}
	}
}

// TestWriteNeverReplaces: a second run, or a file of either name already
// there, leaves the existing keys as they are.
func TestWriteNeverReplaces(t *testing.T) {
	t.Parallel()
	for _, existing := range []string{natskeys.SeedsFile, natskeys.PublicFile} {
		t.Run(existing, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, existing)
			if err := os.WriteFile(path, []byte("keep me\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := natskeys.Generate()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := natskeys.Write(dir, k); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Write over an existing %s: %v, want fs.ErrExist", existing, err)
			}
			if b, _ := os.ReadFile(path); string(b) != "keep me\n" {
				t.Errorf("%s was replaced", existing)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("Write left %d files, want only the existing one", len(entries))
			}
		})
	}
	if _, err := natskeys.Write(t.TempDir(), mesh.Keys{Issuer: "not a seed"}); err == nil {
		t.Error("Write accepted an invalid seed")
	}
}

func keysOf(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}
