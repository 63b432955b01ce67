package tenant_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// TestTokensValidateWithAuthz checks devtenant against the validator the
// services use, configured as they configure it: issuer http://localhost:8400/
// (not the URL the keys come from), audience https://api.authmesh.dev.
func TestTokensValidateWithAuthz(t *testing.T) {
	t.Parallel()
	srv, err := tenant.New(tenant.Config{
		Issuer:     "http://localhost:8400/",
		TenantFile: filepath.Join("..", "..", "..", "deploy", "tenant.yaml"),
		DevDir:     filepath.Join("..", "..", "..", "deploy", "dev"),
		DataDir:    t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kp, err := authz.NewKeyProvider(authz.WithJWKSURL(ts.URL+"/.well-known/jwks.json"), authz.WithRefetchCooldown(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewValidator(kp, authz.WithIssuers("http://localhost:8400/"), authz.WithAudiences("https://api.authmesh.dev"), authz.WithTokenCache(0))
	if err != nil {
		t.Fatal(err)
	}

	overHTTP := func(t *testing.T, form url.Values) string {
		t.Helper()
		resp, err := http.PostForm(ts.URL+"/oauth/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if resp.StatusCode != 200 || decode(resp, &body) != nil {
			t.Fatalf("token: %s", resp.Status)
		}
		return body.AccessToken
	}
	password := url.Values{"grant_type": {"password"}, "username": {"carol@authmesh.dev"}, "password": {"dev-password"},
		"client_id": {"authmesh-cli"}, "audience": {"https://api.authmesh.dev"}, "scope": {"openid profile refund:invoices"}}
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"orders-service"},
		"client_secret": {"orders-service-dev-secret"}, "audience": {"https://api.authmesh.dev"}}

	t.Run("user token", func(t *testing.T) {
		c, err := v.Validate(ctx, overHTTP(t, password))
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "auth0|6553da60a54af58e29493993" || c.IsM2M() || !c.HasPermission("refund:invoices") ||
			!c.HasRole("admin") || !c.HasScope("refund:invoices") || c.AZP != "authmesh-cli" ||
			c.ExpiresAt.Sub(c.IssuedAt) != 24*time.Hour {
			t.Errorf("claims = %+v", c)
		}
	})
	t.Run("M2M token", func(t *testing.T) {
		c, err := v.Validate(ctx, overHTTP(t, cc))
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "orders-service@clients" || !c.IsM2M() || !c.HasScope("cancel:orders") || !slices.Contains(c.GTY, "client-credentials") {
			t.Errorf("claims = %+v", c)
		}
	})
	t.Run("in-process token", func(t *testing.T) {
		tok, err := srv.IssueUserToken("alice@authmesh.dev", "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(ctx, tok); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Management API token is refused by the services", func(t *testing.T) {
		tok, err := srv.IssueClientToken("users-service", "http://localhost:8400/api/v2/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(ctx, tok); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("want invalid_token, got %v", err)
		}
	})
	t.Run("after rotation and revocation", func(t *testing.T) {
		before := overHTTP(t, password)
		if err := srv.RotateSigningKey(); err != nil {
			t.Fatal(err)
		}
		after := overHTTP(t, password)
		for _, tok := range []string{before, after} {
			if _, err := v.Validate(ctx, tok); err != nil {
				t.Errorf("after rotation: %v", err)
			}
		}
		if err := srv.RevokePreviousKey(); err != nil {
			t.Fatal(err)
		}
		// The validator learns of the revocation on its next fetch; force one with an unknown kid.
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := v.Validate(ctx, before)
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a token signed with the revoked key still validates")
			}
			_, _ = v.Validate(ctx, forgedKid(before))
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := v.Validate(ctx, after); err != nil {
			t.Errorf("current-key token after revocation: %v", err)
		}
	})
}

// forgedKid swaps the header for one naming a kid nobody has, which makes a
// validator refetch the JWKS.
func forgedKid(tok string) string {
	parts := strings.SplitN(tok, ".", 2)
	return "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im5vLXN1Y2gta2lkIn0." + parts[1]
}

func decode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
