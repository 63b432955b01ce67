package callout

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// tenantCallout returns a callout whose Validator is a real one of iss's
// tokens (as the TTS configures it), the workloads' clients mapped.
func tenantCallout(tb testing.TB, iss *authztest.Issuer) *Callout {
	tb.Helper()
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(iss.JWKSURL()), authz.WithRefetchCooldown(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := authz.NewValidator(keys, authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience))
	if err != nil {
		tb.Fatal(err)
	}
	co, err := New(Config{Conn: &nats.Conn{}, Validator: v, Keys: mesh.DevKeys,
		Clients: map[string]string{"users-service": mesh.Users, "orders-service": mesh.Orders, "billing-service": mesh.Billing}})
	if err != nil {
		tb.Fatal(err)
	}
	return co
}

// connectWith is a WebSocket CONNECT presenting token (a person's
// connection: the one an attacker's browser makes).
func connectWith(tb testing.TB, token string) *jwt.AuthorizationRequestClaims {
	tb.Helper()
	req := request(tb, jwt.ConnectionTypeWebsocket)
	req.ConnectOptions.Token = token
	return req
}

// TestDecideRefusesAccessAttacks runs authztest's access-token attacks
// against the callout: each CONNECT is refused with the validator's reason
// (what is logged and counted; the client sees an authorization violation),
// never quoting the token. The tenant's own token is admitted.
func TestDecideRefusesAccessAttacks(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	co := tenantCallout(t, iss)
	if _, err := co.Decide(context.Background(), connectWith(t, iss.Token(t, nil))); err != nil {
		t.Fatalf("the tenant's token: %v", err)
	}
	for _, a := range authztest.AccessTokenAttacks(t, iss) {
		t.Run(a.Name, func(t *testing.T) {
			t.Parallel()
			_, err := co.Decide(context.Background(), connectWith(t, a.Token))
			var r *refusal
			if !errors.As(err, &r) || r.reason != a.Reason || r.kind != "unknown" {
				t.Fatalf("Decide: %v, want the refusal %q", err, a.Reason)
			}
			if strings.Contains(r.Error(), a.Token) {
				t.Fatal("the refusal quotes the token")
			}
		})
	}
}

// FuzzDecide feeds the callout arbitrary CONNECT tokens: it never panics,
// admits only the tenant's token, and refuses the rest with a reason that
// does not quote the token.
func FuzzDecide(f *testing.F) {
	iss := authztest.NewIssuer(f)
	co := tenantCallout(f, iss)
	good := iss.Token(f, nil)
	if _, err := co.Decide(context.Background(), connectWith(f, good)); err != nil {
		f.Fatalf("the tenant's token: %v", err)
	}
	for _, s := range append(authztest.Seeds(authztest.AccessTokenAttacks(f, iss)), good, "", "Bearer "+good) {
		f.Add(s)
	}
	// A token verifies with its signature in another base64 spelling too.
	signed := good[:strings.LastIndex(good, ".")+1]
	f.Fuzz(func(t *testing.T, token string) {
		uc, err := co.Decide(context.Background(), connectWith(t, token))
		if err == nil {
			if !strings.HasPrefix(token, signed) || uc.Audience != mesh.LiveAccount {
				t.Fatalf("admitted %+v", uc)
			}
			return
		}
		var r *refusal
		if !errors.As(err, &r) || r.reason == "" || (len(token) >= 16 && strings.Contains(r.reason, token)) {
			t.Fatalf("refusal %v", err)
		}
	})
}
