// Command httpprobe exits 0 when a GET of its URL argument answers 200 within
// two seconds, else 1. It is the exec-form Docker HEALTHCHECK of the
// nats-server image, which has no shell and no probe of its own.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/health"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpprobe URL")
		os.Exit(2)
	}
	if err := health.Get(context.Background(), os.Args[1], 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
