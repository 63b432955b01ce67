package platform

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// customDomain is a second name of the test tenant (an Auth0 custom domain).
const customDomain = "https://login.authmesh.test/"

func TestLoadConfigSeveralIssuers(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig("orders", envOf(map[string]string{
		"AUTH0_DOMAIN": "example.eu.auth0.com", "AUTH0_ISSUER": " " + customDomain + " , https://example.eu.auth0.com/",
		"ORDERS_CLIENT_ID": "O1", "ORDERS_CLIENT_SECRET": "s", "USERS_CLIENT_ID": "U1", "BILLING_CLIENT_ID": "B1",
		"AUTHMESH_TTS_JWKS_URL": "https://tts.internal/.well-known/jwks.json",
	}))
	if err != nil {
		t.Fatal(err)
	}
	// The keys and endpoints stay the canonical domain's: one JWKS for every name.
	if strings.Join(c.Auth0.Issuers, " ") != customDomain+" https://example.eu.auth0.com/" || c.Auth0.Issuer != customDomain ||
		c.Auth0.JWKSURL != "https://example.eu.auth0.com/.well-known/jwks.json" || c.Auth0.TokenURL != "https://example.eu.auth0.com/oauth/token" {
		t.Errorf("auth0 = %+v", c.Auth0)
	}
	if !strings.Contains(c.String(), customDomain+",https://example.eu.auth0.com/") {
		t.Errorf("String() = %s, want both issuers", c)
	}
	for name, v := range map[string]string{
		"second not a URL": "http://localhost:8400/,login.authmesh.test",
		"empty entry":      "http://localhost:8400/,,https://login.authmesh.test/",
		"listed twice":     "http://localhost:8400/, http://localhost:8400/",
	} {
		if _, err := LoadConfig("orders", envOf(map[string]string{"AUTH0_ISSUER": v})); err == nil || !strings.Contains(err.Error(), "AUTH0_ISSUER") {
			t.Errorf("%s: err = %v, want one naming AUTH0_ISSUER", name, err)
		}
	}
}

// A service configured with two names of its tenant accepts a token issued
// under each, in either Auth0 access token profile, and refuses a third name,
// all with the keys of its one JWKS URL.
func TestAppAcceptsEveryIssuerOfItsTenant(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.billingConfig(t, map[string]string{"AUTH0_ISSUER": is.iss + "," + customDomain,
		"AUTHMESH_TTS_JWKS_URL": authztest.NewTxnIssuer(t).JWKSURL()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app, base := newServedApp(t, ctx, cfg, Options{})
	app.Route(http.MethodGet, "/v1/widgets", authz.RequireAll("read:widgets").Users().Clients("orders-service"), func(c echo.Context) error {
		cl, _ := authz.ClaimsFromEcho(c)
		return c.String(http.StatusOK, cl.Issuer)
	})
	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(ctx) }()
	waitReady(t, base)

	user := map[string]any{"sub": "auth0|alice", "azp": "authmesh-cli", "permissions": []string{"read:widgets"}, "gty": "password"}
	m2m := map[string]any{"sub": "orders-service@clients", "azp": "orders-service", "scope": "read:widgets", "gty": "client-credentials"}
	for _, tc := range []struct {
		name, iss, typ string
		claims         map[string]any
		status         int
	}{
		{"canonical, user", is.iss, "JWT", user, 200},
		{"custom domain, user", customDomain, "JWT", user, 200},
		{"custom domain, m2m", customDomain, "JWT", m2m, 200},
		{"custom domain, rfc 9068 user", customDomain, "at+jwt", rfc9068(user), 200},
		{"canonical, rfc 9068 m2m", is.iss, "at+jwt", rfc9068(m2m), 200},
		{"a third name", "https://evil.authmesh.test/", "JWT", user, 401},
		{"custom domain without its slash", strings.TrimSuffix(customDomain, "/"), "JWT", user, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := is.signAs(t, tc.iss, tc.typ, tc.claims)
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/widgets", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (tc.status == 200 && string(raw) != tc.iss) {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, raw, tc.status)
			}
		})
	}
	cancel()
	authztest.Receive(t, runErr, 10*time.Second, "the app stopping")
}

// rfc9068 turns Auth0-profile claims into the RFC 9068 profile's.
func rfc9068(c map[string]any) map[string]any {
	out := map[string]any{"client_id": c["azp"], "jti": "j-" + c["sub"].(string)}
	for k, v := range c {
		if k != "azp" && k != "gty" {
			out[k] = v
		}
	}
	return out
}

// signAs signs claims as the issuer's tenant under the name iss, with header typ.
func (is *issuer) signAs(t *testing.T, iss, typ string, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.key},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := map[string]any{"iss": iss, "aud": DefaultAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
