// Package health is the probe behind the exec-form Docker HEALTHCHECK of
// authmesh's scratch images, which have no shell and no curl: one GET that
// must answer 200 in time. The services (platform.Main), devtenant and
// webserve check their own /healthz with Local; httpprobe, in the images
// of programs that are not ours (nats-server, Jaeger), checks any URL with
// Get. It imports nothing but the standard library, so a small binary
// that uses it stays small.
package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Get GETs url and returns nil when it answers 200 within timeout.
func Get(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// Local checks a server from inside its own container: it GETs /healthz on
// 127.0.0.1 at the port of addr, the server's listen address (":8400").
func Local(ctx context.Context, addr string, timeout time.Duration) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	return Get(ctx, "http://"+net.JoinHostPort("127.0.0.1", port)+"/healthz", timeout)
}
