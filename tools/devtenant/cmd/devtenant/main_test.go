package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

func TestTokenAndHealthcheck(t *testing.T) {
	root := filepath.Join("..", "..", "..", "..")
	tenantFile, devDir := filepath.Join(root, "deploy", "tenant.yaml"), filepath.Join(root, "deploy", "dev")
	srv, err := tenant.New(tenant.Config{Issuer: "http://localhost:8400/", TenantFile: tenantFile, DevDir: devDir, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	t.Setenv("DEVTENANT_URL", ts.URL)
	t.Setenv("DEVTENANT_TENANT_FILE", tenantFile)
	t.Setenv("DEVTENANT_DEV_DIR", devDir)

	tests := []struct {
		args          []string
		sub, aud, azp string
	}{
		{[]string{"--user", "alice@authmesh.dev"}, "auth0|6553da60a54af58e29493991", "", "authmesh-cli"},
		{[]string{"--client", "orders-service"}, "orders-service@clients", "https://api.authmesh.dev", "orders-service"},
		{[]string{"--client", "users-service", "--audience", "http://localhost:8400/api/v2/"}, "users-service@clients", "http://localhost:8400/api/v2/", "users-service"},
		{[]string{"--client", "tenant-admin"}, "tenant-admin@clients", "http://localhost:8400/api/v2/", "tenant-admin"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if err := token(context.Background(), tc.args, &out); err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(strings.TrimSpace(out.String()), ".")
			if len(parts) != 3 {
				t.Fatalf("output is not just a token: %q", out.String())
			}
			b, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c map[string]any
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if c["sub"] != tc.sub || c["azp"] != tc.azp || (tc.aud != "" && c["aud"] != tc.aud) {
				t.Errorf("claims = %v", c)
			}
		})
	}
	if err := token(context.Background(), []string{"--user", "alice@authmesh.dev", "--password", "wrong"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "invalid_user_password") {
		t.Errorf("wrong password: %v", err)
	}
	if err := token(context.Background(), nil, &bytes.Buffer{}); err == nil {
		t.Error("no --user or --client accepted")
	}

	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ts.URL, "http://"))
	t.Setenv("DEVTENANT_ADDR", ":"+port)
	if err := healthcheck(context.Background()); err != nil {
		t.Errorf("healthcheck against a running devtenant: %v", err)
	}
	ts.Close()
	if err := healthcheck(context.Background()); err == nil {
		t.Error("healthcheck passed with devtenant down")
	}
}
