package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLocal: a server's /healthz on loopback at its listen port passes with
// 200 and fails with anything else, a slow answer, nothing listening or a
// listen address without a port.
func TestLocal(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	var delay atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		time.Sleep(time.Duration(delay.Load()))
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	addr := ":" + port
	ctx := context.Background()

	status.Store(http.StatusOK)
	if err := Local(ctx, addr, time.Second); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := Local(ctx, addr, time.Second); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503: %v, want an error naming it", err)
	}
	status.Store(http.StatusOK)
	delay.Store(int64(300 * time.Millisecond))
	if err := Local(ctx, addr, 50*time.Millisecond); err == nil {
		t.Error("an answer after the timeout passed")
	}
	delay.Store(0)
	if err := Local(ctx, "8400", time.Second); err == nil {
		t.Error("a listen address without a port passed")
	}
	srv.Close()
	if err := Local(ctx, addr, time.Second); err == nil {
		t.Error("nothing listening passed")
	}
}

// TestGet: any URL, as httpprobe checks nats-server's and Jaeger's.
func TestGet(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/status" {
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	if err := Get(context.Background(), srv.URL+"/status", time.Second); err != nil {
		t.Fatalf("200: %v", err)
	}
	if err := Get(context.Background(), srv.URL+"/other", time.Second); err == nil {
		t.Error("404 passed")
	}
}
