package platform

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		service string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{
			name: "defaults", service: "billing",
			check: func(t *testing.T, c Config) {
				want := map[string]string{
					"addr": ":8403", "nats": DefaultNATSURL,
					"client": "billing-service", "secret": "billing-service-dev-secret",
					"iss": "http://localhost:8400/", "aud": "https://api.authmesh.dev",
					"jwks": "http://localhost:8400/.well-known/jwks.json", "token": "http://localhost:8400/oauth/token",
					"mgmt": "http://localhost:8400/api/v2/",
				}
				got := map[string]string{
					"addr": c.HTTPAddr, "nats": c.NATSURL,
					"client": c.ClientID, "secret": c.ClientSecret, "iss": c.Auth0.Issuer, "aud": c.Auth0.Audience,
					"jwks": c.Auth0.JWKSURL, "token": c.Auth0.TokenURL, "mgmt": c.Auth0.ManagementURL,
				}
				for k, w := range want {
					if got[k] != w {
						t.Errorf("%s = %q, want %q", k, got[k], w)
					}
				}
				if c.NATSReplicas != 1 || c.LogLevel != slog.LevelInfo || len(c.CORSOrigins) != 1 || c.CORSOrigins[0] != DefaultCORS {
					t.Errorf("replicas/level/cors = %d/%v/%v", c.NATSReplicas, c.LogLevel, c.CORSOrigins)
				}
			},
		},
		{
			name: "real tenant from AUTH0_DOMAIN", service: "users",
			env: map[string]string{"AUTH0_DOMAIN": "example.eu.auth0.com", "AUTH0_AUDIENCE": "https://api.example",
				"USERS_CLIENT_ID": "U1", "USERS_CLIENT_SECRET": "s3cret",
				"ORDERS_CLIENT_ID": "O1", "BILLING_CLIENT_ID": "B1", "AUTHMESH_TTS_JWKS_URL": "https://tts.internal/.well-known/jwks.json"},
			check: func(t *testing.T, c Config) {
				if c.ClientID != "U1" || c.ClientSecret != "s3cret" ||
					c.PeerClientID("orders") != "O1" || c.PeerClientID("billing") != "B1" || c.PeerClientID("tts") != "" {
					t.Errorf("identities = %s, peers %q %q", c, c.PeerClientID("orders"), c.PeerClientID("billing"))
				}
				if c.Auth0.Issuer != "https://example.eu.auth0.com/" ||
					c.Auth0.JWKSURL != "https://example.eu.auth0.com/.well-known/jwks.json" ||
					c.Auth0.TokenURL != "https://example.eu.auth0.com/oauth/token" ||
					c.Auth0.ManagementURL != "https://example.eu.auth0.com/api/v2/" ||
					c.Auth0.Audience != "https://api.example" || c.HTTPAddr != ":8401" {
					t.Errorf("auth0 = %+v addr %s", c.Auth0, c.HTTPAddr)
				}
			},
		},
		{
			name: "compose: issuer and key URL apart", service: "orders",
			env: map[string]string{"AUTH0_JWKS_URL": "http://devtenant:8400/.well-known/jwks.json", "ORDERS_NATS_REPLICAS": "3",
				"ORDERS_CORS_ORIGINS": "http://a.test, http://b.test", "ORDERS_LOG_LEVEL": "debug", "ORDERS_MGMT_URL": "http://devtenant:8400/api/v2/"},
			check: func(t *testing.T, c Config) {
				if c.Auth0.Issuer != DefaultIssuer || c.Auth0.JWKSURL != "http://devtenant:8400/.well-known/jwks.json" ||
					c.NATSReplicas != 3 || len(c.CORSOrigins) != 2 || c.CORSOrigins[1] != "http://b.test" ||
					c.LogLevel != slog.LevelDebug || c.Auth0.ManagementURL != "http://devtenant:8400/api/v2/" {
					t.Errorf("config = %+v", c)
				}
				if c.Getenv("MGMT_URL") != "http://devtenant:8400/api/v2/" {
					t.Errorf("Getenv prefixed lookup failed")
				}
				if strings.Contains(c.String(), c.ClientSecret) {
					t.Errorf("String() leaks a secret: %s", c.String())
				}
			},
		},
		{name: "bad replicas", service: "billing", env: map[string]string{"BILLING_NATS_REPLICAS": "0"}, wantErr: "BILLING_NATS_REPLICAS"},
		{name: "bad level", service: "billing", env: map[string]string{"BILLING_LOG_LEVEL": "loud"}, wantErr: "BILLING_LOG_LEVEL"},
		{name: "bad addr", service: "billing", env: map[string]string{"BILLING_HTTP_ADDR": "8403"}, wantErr: "BILLING_HTTP_ADDR"},
		{name: "domain with scheme", service: "billing", env: map[string]string{"AUTH0_DOMAIN": "https://x.auth0.com"}, wantErr: "AUTH0_DOMAIN"},
		{name: "issuer not a URL", service: "billing", env: map[string]string{"AUTH0_ISSUER": "localhost"}, wantErr: "AUTH0_ISSUER"},
		{name: "bad service", service: "Billing", wantErr: "invalid service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadConfig(tt.service, envOf(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestPeerClientID: a peer's client id comes from the variable that peer
// reads for its own (a real tenant's ids are generated), else the local
// tenant's name.
func TestPeerClientID(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig("billing", envOf(map[string]string{
		"BILLING_CLIENT_ID": "Bx1", "ORDERS_CLIENT_ID": " Ox9 ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	for peer, want := range map[string]string{"orders": "Ox9", "users": "users-service", "billing": "Bx1"} {
		if got := c.PeerClientID(peer); got != want {
			t.Errorf("PeerClientID(%q) = %q, want %q", peer, got, want)
		}
	}
}

// TestLoadConfigRealTenantHasNoDevDefaults: with AUTH0_DOMAIN set, a missing
// client id, client secret or peer client id (the TTS: a NATS seed) is a
// start-up error naming every missing variable, never the published dev value.
func TestLoadConfigRealTenantHasNoDevDefaults(t *testing.T) {
	t.Parallel()
	full := map[string]string{
		"AUTH0_DOMAIN":     "example.eu.auth0.com",
		"ORDERS_CLIENT_ID": "O1", "ORDERS_CLIENT_SECRET": "s",
		"USERS_CLIENT_ID":       "U1",
		"BILLING_CLIENT_ID":     "B1",
		"AUTHMESH_TTS_JWKS_URL": "https://tts.internal/.well-known/jwks.json",
	}
	if _, err := LoadConfig("orders", envOf(full)); err != nil {
		t.Fatalf("complete real-tenant config refused: %v", err)
	}
	required := []string{"ORDERS_CLIENT_ID", "ORDERS_CLIENT_SECRET", "USERS_CLIENT_ID", "BILLING_CLIENT_ID", "AUTHMESH_TTS_JWKS_URL"}
	for _, name := range required {
		t.Run("without "+name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range full {
				if k != name {
					env[k] = v
				}
			}
			env[name] = "  " // blank counts as unset
			_, err := LoadConfig("orders", envOf(env))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("LoadConfig = %v, want an error naming %s", err, name)
			}
		})
	}
	_, err := LoadConfig("orders", envOf(map[string]string{"AUTH0_DOMAIN": "example.eu.auth0.com"}))
	if err == nil {
		t.Fatal("a real tenant with no identities configured started with dev defaults")
	}
	for _, name := range required {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	for _, secret := range []string{"orders-service-dev-secret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error mentions the dev secret %s", secret)
		}
	}
	// Without AUTH0_DOMAIN the local tenant's defaults stay.
	c, err := LoadConfig("orders", envOf(nil))
	if err != nil || c.ClientID != "orders-service" || c.PeerClientID("billing") != "billing-service" {
		t.Fatalf("local defaults: %v %s", err, c)
	}
}

// TestLoadConfigTokenServiceSeeds: the TTS holds the callout's seeds, the dev
// ones by default, none with a real tenant, and refuses a seed of the wrong
// kind naming the variable.
func TestLoadConfigTokenServiceSeeds(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(TokenServiceName, envOf(nil))
	if err != nil || c.Callout != mesh.DevKeys {
		t.Fatalf("dev seeds: %v", err)
	}
	_, err = LoadConfig(TokenServiceName, envOf(map[string]string{"TTS_NATS_SEED": mesh.DevKeys.Issuer}))
	if err == nil || !strings.Contains(err.Error(), "service seed is a") {
		t.Errorf("an account seed as the user seed: %v", err)
	}
	_, err = LoadConfig(TokenServiceName, envOf(map[string]string{"AUTH0_DOMAIN": "example.eu.auth0.com"}))
	for _, name := range []string{"TTS_CALLOUT_ISSUER_SEED", "TTS_CALLOUT_XKEY_SEED", "TTS_NATS_SEED", "TTS_SYS_NATS_SEED"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("real tenant without %s: %v", name, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), mesh.DevKeys.Issuer) {
		t.Error("the error shows a seed")
	}
}
