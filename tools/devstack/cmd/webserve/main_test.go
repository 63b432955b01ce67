package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "callback"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"index.html": "<h1>shop</h1>", "callback/index.html": "cb"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(handler(dir, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	tests := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, "<h1>shop</h1>"},
		{"GET", "/healthz", 200, ""},
		{"GET", "/callback/?code=x&state=y", 200, "cb"},
		{"GET", "/callback?code=x&state=y", http.StatusMovedPermanently, ""},
		{"GET", "/missing.js", 404, ""},
		{"POST", "/", http.StatusMethodNotAllowed, ""},
		{"GET", "/../../etc/passwd", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.body != "" && string(b) != tc.body {
				t.Errorf("body = %q, want %q", b, tc.body)
			}
			if tc.status == 200 && tc.path != "/healthz" && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("missing nosniff")
			}
		})
	}
}
