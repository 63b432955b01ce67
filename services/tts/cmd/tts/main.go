// Command tts is the authmesh Transaction Token Service: over NATS it turns an
// inbound access token, presented by a workload with its own client-credentials
// token, into a short-lived transaction token narrowed to one hop; on HTTP
// (:8406) it serves health, readiness, metrics and the JWKS of its ES256 keys.
//
//	tts                      run the service
//	tts healthcheck          probe the running service (Docker HEALTHCHECK)
//	tts keys init [FILE]     create a key file (current + next key)
//	tts keys rotate [FILE]   promote the next key, publish a new next one
//	tts nats-keys init DIR   create the NATS auth callout's keys: DIR/tts-credentials.env
//	                         (the seeds, for the TTS) and DIR/nats-callout-keys.env (their
//	                         public halves, for the NATS servers)
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
	"github.com/authmesh/authmesh/services/tts/internal/natskeys"
	"github.com/authmesh/authmesh/services/tts/internal/service"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "keys" {
		os.Exit(keysCommand(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "nats-keys" {
		os.Exit(natsKeysCommand(os.Args[2:]))
	}
	platform.Main("tts", service.Run)
}

func keysCommand(args []string) int {
	if len(args) < 1 || len(args) > 2 || (args[0] != "init" && args[0] != "rotate") {
		fmt.Fprintln(os.Stderr, "usage: tts keys init|rotate [FILE]  (default $TTS_KEYS_FILE, else "+service.DefaultKeysFile+")")
		return 2
	}
	path := os.Getenv("TTS_KEYS_FILE")
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
			fmt.Fprintf(os.Stderr, "tts keys init: %s exists; rotate it instead\n", path)
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
		fmt.Fprintln(os.Stderr, "tts keys:", err)
		return 1
	}
	fmt.Printf("%s: signing with %s; published %v\n", path, set.CurrentKID(), set.KIDs())
	return 0
}

// natsKeysCommand writes a fresh set of callout keys; the seeds go to a file
// only (0600), never to the terminal.
func natsKeysCommand(args []string) int {
	if len(args) != 2 || args[0] != "init" {
		fmt.Fprintln(os.Stderr, "usage: tts nats-keys init DIR  (writes DIR/"+natskeys.SeedsFile+" and DIR/"+natskeys.PublicFile+")")
		return 2
	}
	dir := args[1]
	k, err := natskeys.Generate()
	if err == nil {
		_, err = natskeys.Write(dir, k)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tts nats-keys:", err)
		return 1
	}
	seeds, public := filepath.Join(dir, natskeys.SeedsFile), filepath.Join(dir, natskeys.PublicFile)
	fmt.Printf("%s: the seeds (keep secret; the TTS only)\n%s: their public keys (the NATS servers)\n\n", seeds, public)
	fmt.Printf("kubectl create secret generic tts-credentials --from-env-file=%s\n", seeds)
	fmt.Printf("kubectl create configmap nats-callout-keys --from-env-file=%s\n", public)
	return 0
}
