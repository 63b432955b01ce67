package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/services/tts/internal/keys"
	"github.com/authmesh/authmesh/services/tts/internal/natskeys"
)

func noEnv(string) string { return "" }

// TestUsage: a malformed command prints its usage on stderr, nothing on
// stdout, and exits 2 (scripts tell it from a failure, 1).
func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(stdout, stderr *bytes.Buffer) int
		want string
	}{
		{"keys", func(o, e *bytes.Buffer) int { return Keys(nil, noEnv, o, e) }, "usage: tts keys init|rotate [FILE]"},
		{"keys unknown", func(o, e *bytes.Buffer) int { return Keys([]string{"list"}, noEnv, o, e) }, "usage: tts keys"},
		{"keys too many", func(o, e *bytes.Buffer) int { return Keys([]string{"init", "a", "b"}, noEnv, o, e) }, "usage: tts keys"},
		{"nats-keys", func(o, e *bytes.Buffer) int { return NATSKeys(nil, o, e) }, "usage: tts nats-keys init DIR"},
		{"nats-keys no dir", func(o, e *bytes.Buffer) int { return NATSKeys([]string{"init"}, o, e) }, "usage: tts nats-keys"},
		{"nats-keys unknown", func(o, e *bytes.Buffer) int { return NATSKeys([]string{"rotate", "d"}, o, e) }, "usage: tts nats-keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			if code := tc.run(&stdout, &stderr); code != 2 || stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout.String(), stderr.String(), tc.want)
			}
		})
	}
}

// TestKeys: init creates the file $TTS_KEYS_FILE names and refuses to
// replace it; rotate promotes its next key.
func TestKeys(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.json")
	env := func(k string) string {
		if k == "TTS_KEYS_FILE" {
			return path
		}
		return ""
	}
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Keys(args, env, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := run("init"); code != 0 || !strings.HasPrefix(out, path+": signing with ") || errOut != "" {
		t.Fatalf("init: %d %q %q", code, out, errOut)
	}
	first, err := keys.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("init", path); code != 1 || !strings.Contains(errOut, "exists; rotate it instead") {
		t.Fatalf("init over a key file: %d %q", code, errOut)
	}
	if code, out, _ := run("rotate"); code != 0 || !strings.Contains(out, "published") {
		t.Fatalf("rotate: %d %q", code, out)
	}
	rotated, err := keys.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.CurrentKID() == first.CurrentKID() || !strings.Contains(strings.Join(first.KIDs(), " "), rotated.CurrentKID()) {
		t.Fatalf("rotate signs with %s; before it %s published %v", rotated.CurrentKID(), first.CurrentKID(), first.KIDs())
	}
	if code, _, errOut := run("rotate", filepath.Join(t.TempDir(), "missing.json")); code != 1 || !strings.HasPrefix(errOut, "tts keys: ") {
		t.Fatalf("rotate a missing file: %d %q", code, errOut)
	}
}

// TestNATSKeys: init writes both files and prints their names and the
// kubectl commands, never a seed.
func TestNATSKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := NATSKeys([]string{"init", dir}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("init: %d %q", code, stderr.String())
	}
	seeds, err := os.ReadFile(filepath.Join(dir, natskeys.SeedsFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, natskeys.PublicFile)); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(seeds), "\n") {
		if _, seed, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") && seed != "" && strings.Contains(stdout.String(), seed) {
			t.Fatalf("stdout shows a seed: %s", stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "--from-env-file="+filepath.Join(dir, natskeys.SeedsFile)) {
		t.Fatalf("stdout %q", stdout.String())
	}
	stderr.Reset()
	if code := NATSKeys([]string{"init", dir}, &stdout, &stderr); code != 1 || !strings.HasPrefix(stderr.String(), "tts nats-keys: ") {
		t.Fatalf("init over existing keys: %d %q", code, stderr.String())
	}
}
