package authz_test

import (
	"errors"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// Both Auth0 access token profiles pass the same validator and the same
// policies: an API switched to the RFC 9068 dialect keeps its callers.
func TestBothAccessTokenProfiles(t *testing.T) {
	t.Parallel()
	iss, v := newIssuerValidator(t)
	orders := authz.RequireAll("read:profile").Clients("orders-service")
	for _, tc := range []struct {
		name, token, client string
		m2m                 bool
	}{
		{"auth0 user", iss.Token(t, nil), "authmesh-cli", false},
		{"rfc9068 user", iss.RFC9068Token(t, nil), "authmesh-cli", false},
		{"auth0 m2m", iss.M2MToken(t, "orders-service", "read:profile"), "orders-service", true},
		{"rfc9068 m2m (no gty)", iss.RFC9068M2MToken(t, "orders-service", "read:profile"), "orders-service", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Validate(ctxT(t), tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if c.Client() != tc.client || c.IsM2M() != tc.m2m {
				t.Fatalf("Client() = %q, IsM2M = %v; claims %+v", c.Client(), c.IsM2M(), c)
			}
			if tc.m2m {
				if err := orders.Authorize(c); err != nil {
					t.Errorf("orders-service policy: %v", err)
				}
				var ae *authz.Error
				if err := authz.RequireAll("read:profile").Clients("billing-service").Authorize(c); !errors.As(err, &ae) || ae.Reason != authz.ReasonClientNotAllowed {
					t.Errorf("billing-service policy: %v, want client_not_allowed", err)
				}
			} else if err := authz.RequireAll("read:profile").Users().Authorize(c); err != nil {
				t.Errorf("users policy: %v", err)
			}
		})
	}
}

// A client_id never overrides azp: a token carrying both (no Auth0 profile
// does) is judged by azp, the claim of the profile that has one.
func TestClientPrefersAZP(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	c, err := newValidator(t, iss, nil).Validate(ctxT(t), iss.Token(t, authztest.Claims{
		"sub": "orders-service@clients", "azp": "orders-service", "client_id": "billing-service", "gty": "client-credentials", "scope": "read:profile",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Client() != "orders-service" {
		t.Errorf("Client() = %q, want the azp", c.Client())
	}
}

func TestWithRequiredType(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss, nil, authz.WithRequiredType(authz.AccessTokenType))
	k := iss.SigningKey()
	withTyp := func(typ any) string {
		return authztest.Sign(t, k.Private, map[string]any{"alg": "RS256", "typ": typ, "kid": k.ID}, authztest.ToRFC9068(iss.DefaultClaims()))
	}
	for _, tc := range []struct {
		name, token string
		ok          bool
	}{
		{"at+jwt", iss.RFC9068Token(t, nil), true},
		{"application/at+jwt", withTyp("application/at+jwt"), true},
		{"AT+JWT", withTyp("AT+JWT"), true},
		{"auth0 profile (typ JWT)", iss.Token(t, nil), false},
		{"rfc9068 claims under typ JWT", withTyp("JWT"), false},
		{"no typ", withTyp(nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Validate(ctxT(t), tc.token)
			var ae *authz.Error
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (!errors.As(err, &ae) || ae.Reason != "typ" || !errors.Is(err, authz.ErrInvalidToken)):
				t.Fatalf("err = %v, want invalid_token with reason typ", err)
			}
		})
	}
	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(iss.JWKSURL()))
	if _, err := authz.NewValidator(keys, authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience), authz.WithRequiredType(" ")); err == nil {
		t.Error("an empty required type was accepted")
	}
}

// Custom domains: one tenant, several issuer names, one JWKS. A token's iss
// must be exactly one of them; the keys are fetched once for all.
func TestSeveralIssuersOneTenant(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	custom := "https://login.authmesh.dev/"
	v := newValidator(t, iss, nil, authz.WithIssuers(custom))
	for _, is := range []string{iss.Issuer(), custom} {
		for _, tok := range []string{iss.Token(t, authztest.Claims{"iss": is}), iss.RFC9068Token(t, authztest.Claims{"iss": is})} {
			c, err := v.Validate(ctxT(t), tok)
			if err != nil {
				t.Fatalf("issuer %s: %v", is, err)
			}
			if c.Issuer != is {
				t.Errorf("Issuer = %q, want %q", c.Issuer, is)
			}
		}
	}
	if n := iss.Fetches(); n != 1 {
		t.Errorf("JWKS fetched %d times for two issuers of one tenant, want 1", n)
	}
	attacker := authztest.AttackerKey(t, iss.SigningKey().Private)
	for name, tok := range map[string]string{
		"third issuer":                    iss.Token(t, authztest.Claims{"iss": "https://evil.example/"}),
		"custom domain without its slash": iss.Token(t, authztest.Claims{"iss": "https://login.authmesh.dev"}),
		"custom domain, upper case":       iss.Token(t, authztest.Claims{"iss": "https://LOGIN.authmesh.dev/"}),
		"custom domain, foreign key":      authztest.Sign(t, attacker, map[string]any{"alg": "RS256", "typ": "JWT", "kid": iss.SigningKey().ID}, iss.DefaultClaims().With(authztest.Claims{"iss": custom})),
		"no iss":                          iss.Token(t, authztest.Claims{"iss": nil}),
	} {
		if _, err := v.Validate(ctxT(t), tok); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("%s: err = %v, want invalid_token", name, err)
		}
	}
}
