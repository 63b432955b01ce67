// Command httpprobe exits 0 when a GET of its URL argument answers 200 within
// two seconds, else 1. It is the exec-form Docker HEALTHCHECK of the
// nats-server image, which has no shell and no probe of its own.
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpprobe URL")
		os.Exit(2)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		os.Exit(1)
	}
}
