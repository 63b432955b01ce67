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
	"os"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/cli"
	"github.com/authmesh/authmesh/services/tts/internal/service"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "keys":
			os.Exit(cli.Keys(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
		case "nats-keys":
			os.Exit(cli.NATSKeys(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	platform.Main(service.Name, service.Run)
}
