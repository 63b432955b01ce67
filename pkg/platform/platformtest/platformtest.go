// Package platformtest runs a service built on pkg/platform in-process for
// component tests: on a loopback port, until the test ends, and waits until
// its /readyz answers 200.
//
//	base, stop := platformtest.Serve(t, func(ctx context.Context, opts platform.Options) error {
//		return service.RunWith(ctx, cfg, opts, service.Tuning{})
//	})
package platformtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/platform"
)

// ReadyTimeout bounds the wait for /readyz; StopTimeout the wait for run to
// return once its context is cancelled.
const (
	ReadyTimeout = 20 * time.Second
	StopTimeout  = 10 * time.Second
)

// Serve calls run with a loopback listener and a discarding logger in the
// options, waits until the service is ready and returns its base URL
// (http://127.0.0.1:port). stop cancels run and waits for it; it runs at the
// end of the test if the test has not called it. run returning an error
// other than context.Canceled fails the test.
func Serve(tb testing.TB, run func(ctx context.Context, opts platform.Options) error) (base string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("platformtest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, platform.Options{Listener: ln, Logger: slog.New(slog.DiscardHandler)}) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					tb.Errorf("platformtest: run: %v", err)
				}
			case <-time.After(StopTimeout):
				tb.Error("platformtest: the service did not stop")
			}
		})
	}
	tb.Cleanup(stop)
	base = "http://" + ln.Addr().String()
	WaitReady(tb, base)
	return base, stop
}

// WaitReady waits up to ReadyTimeout until base/readyz answers 200; the
// test fails with the last answer otherwise.
func WaitReady(tb testing.TB, base string) {
	tb.Helper()
	var last string
	deadline := time.Now().Add(ReadyTimeout)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = string(b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("platformtest: %s not ready within %s: %s", base, ReadyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Response is an HTTP answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v; the test fails if it is not JSON.
func (r Response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends method url with token as the bearer token and body as JSON
// ("" for none of either) and hdr as name, value pairs.
func Do(tb testing.TB, method, url, token, body string, hdr ...string) Response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return Response{Status: r.StatusCode, Header: r.Header, Body: b}
}
