// Package cli is the tts binary's key commands, apart from running the
// service: `tts keys init|rotate [FILE]` and `tts nats-keys init DIR`. Each
// takes the arguments after its name and returns the exit code: 0 done,
// 1 failed, 2 a usage error.
package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/authmesh/authmesh/services/tts/internal/keys"
	"github.com/authmesh/authmesh/services/tts/internal/natskeys"
	"github.com/authmesh/authmesh/services/tts/internal/service"
)

// Keys creates (init) or rotates (rotate) a key file: FILE, else
// $TTS_KEYS_FILE (read with getenv), else service.DefaultKeysFile.
func Keys(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) < 1 || len(args) > 2 || (args[0] != "init" && args[0] != "rotate") {
		fmt.Fprintln(stderr, "usage: tts keys init|rotate [FILE]  (default $TTS_KEYS_FILE, else "+service.DefaultKeysFile+")")
		return 2
	}
	path := getenv("TTS_KEYS_FILE")
	if len(args) == 2 {
		path = args[1]
	}
	if path == "" {
		path = service.DefaultKeysFile
	}
	var set *keys.Set
	var err error
	switch args[0] {
	case "init":
		if _, statErr := os.Stat(path); statErr == nil {
			fmt.Fprintf(stderr, "tts keys init: %s exists; rotate it instead\n", path)
			return 1
		}
		set, err = keys.New()
	case "rotate":
		var old *keys.Set
		if old, err = keys.Load(path); err == nil {
			set, err = old.Rotate()
		}
	}
	if err == nil {
		err = set.Save(path)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tts keys:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: signing with %s; published %v\n", path, set.CurrentKID(), set.KIDs())
	return 0
}

// NATSKeys writes a fresh set of callout keys to DIR (init DIR); the seeds
// go to a file only (0600), never to stdout.
func NATSKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "init" {
		fmt.Fprintln(stderr, "usage: tts nats-keys init DIR  (writes DIR/"+natskeys.SeedsFile+" and DIR/"+natskeys.PublicFile+")")
		return 2
	}
	dir := args[1]
	k, err := natskeys.Generate()
	if err == nil {
		_, err = natskeys.Write(dir, k)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tts nats-keys:", err)
		return 1
	}
	seeds, public := filepath.Join(dir, natskeys.SeedsFile), filepath.Join(dir, natskeys.PublicFile)
	fmt.Fprintf(stdout, "%s: the seeds (keep secret; the TTS only)\n%s: their public keys (the NATS servers)\n\n", seeds, public)
	fmt.Fprintf(stdout, "kubectl create secret generic tts-credentials --from-env-file=%s\n", seeds)
	fmt.Fprintf(stdout, "kubectl create configmap nats-callout-keys --from-env-file=%s\n", public)
	return 0
}
