package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestVariants checks what the comparison rests on: the one token is
// accepted by all three variants, and the two auth layers deny without it.
func TestVariants(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		variant string
		auth    string
		want    int
	}{
		{"open", "", http.StatusOK},
		{"open", "Bearer " + out["token"], http.StatusOK},
		{"authz", "Bearer " + out["token"], http.StatusOK},
		{"authz", "", http.StatusUnauthorized},
		{"authz", "Bearer " + out["token"] + "x", http.StatusUnauthorized},
		{"go-jwt-middleware", "Bearer " + out["token"], http.StatusOK},
		{"go-jwt-middleware", "", http.StatusBadRequest}, // its default error handler's answer
		{"go-jwt-middleware", "Bearer " + out["token"] + "x", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.variant+"/"+map[bool]string{true: "with token", false: "without"}[tt.auth != ""], func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, out[tt.variant], nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.want, b)
			}
			if tt.want == http.StatusOK && strings.TrimSpace(string(b)) != "ok" {
				t.Fatalf("body %q", b)
			}
		})
	}
}
