package callout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"gopkg.in/yaml.v3"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// tenantFile is the real tenant: its clients and roles drive the mapping test.
type tenantFile struct {
	Clients []struct {
		Name    string `yaml:"name"`
		AppType string `yaml:"app_type"`
	} `yaml:"clients"`
	Roles []struct {
		Name        string `yaml:"name"`
		Permissions []struct {
			Name string `yaml:"permission_name"`
		} `yaml:"permissions"`
	} `yaml:"roles"`
}

func loadTenant(t *testing.T) tenantFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "tenant.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tf tenantFile
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	return tf
}

// claimsValidator answers fixed claims: Decide's mapping, apart from token
// verification (which callout_test.go covers with real tokens).
type claimsValidator struct{ c *authz.Claims }

func (v claimsValidator) Validate(context.Context, string) (*authz.Claims, error) {
	if v.c == nil {
		return nil, &authz.Error{Code: authz.CodeInvalidToken, Reason: "expired"}
	}
	return v.c, nil
}

func request(t testing.TB, connType string) *jwt.AuthorizationRequestClaims {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	req := &jwt.AuthorizationRequestClaims{}
	req.UserNkey = pub
	req.ConnectOptions.Token = "a token"
	req.ClientInformation.Type = connType
	return req
}

func decide(t *testing.T, c *authz.Claims, connType string) (*jwt.UserClaims, error) {
	t.Helper()
	co, err := New(Config{Conn: &nats.Conn{}, Validator: claimsValidator{c}, Keys: mesh.DevKeys,
		Clients: map[string]string{"users-service": mesh.Users, "orders-service": mesh.Orders, "billing-service": mesh.Billing}})
	if err != nil {
		t.Fatal(err)
	}
	return co.Decide(context.Background(), request(t, connType))
}

// TestMappingCoversTheTenant: every client of deploy/tenant.yaml and every
// role gets exactly what the mesh table derives, nothing written twice.
func TestMappingCoversTheTenant(t *testing.T) {
	tf := loadTenant(t)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, cl := range tf.Clients {
		if cl.AppType != "non_interactive" {
			continue // people's clients: their tokens are the roles' below
		}
		t.Run("client "+cl.Name, func(t *testing.T) {
			c := &authz.Claims{Subject: cl.Name + "@clients", AZP: cl.Name, GTY: []string{"client-credentials"}, ExpiresAt: exp}
			uc, err := decide(t, c, jwt.ConnectionTypeStandard)
			name, isWorkload := map[string]string{"users-service": mesh.Users, "orders-service": mesh.Orders, "billing-service": mesh.Billing}[cl.Name]
			if !isWorkload {
				var r *refusal
				if !errors.As(err, &r) || r.reason != "unknown_client" {
					t.Fatalf("a client that is no workload: %v, want unknown_client", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w, _ := mesh.Lookup(name)
			p := w.Permissions()
			if uc.Audience != w.Account || uc.Name != w.Name || uc.Expires != exp.Unix() ||
				!slices.Equal(uc.Pub.Allow, jwt.StringList(p.Publish)) || !slices.Equal(uc.Sub.Allow, jwt.StringList(p.Subscribe)) ||
				(uc.Resp != nil) != p.Responses || !slices.Equal(uc.AllowedConnectionTypes, jwt.StringList{jwt.ConnectionTypeStandard}) {
				t.Errorf("%s: user %+v, want the mesh's %+v in %s", cl.Name, uc, p, w.Account)
			}
			if _, err := decide(t, c, jwt.ConnectionTypeWebsocket); err == nil {
				t.Error("a workload over WebSocket was admitted")
			}
		})
	}
	for _, role := range tf.Roles {
		t.Run("role "+role.Name, func(t *testing.T) {
			var perms []string
			for _, p := range role.Permissions {
				perms = append(perms, p.Name)
			}
			c := &authz.Claims{Subject: "auth0|" + role.Name, AZP: "authmesh-web", Permissions: perms, ExpiresAt: exp}
			uc, err := decide(t, c, jwt.ConnectionTypeWebsocket)
			if err != nil {
				t.Fatal(err)
			}
			want := mesh.PersonPermissions(c.Subject, perms)
			if uc.Audience != mesh.LiveAccount || uc.Expires != exp.Unix() || len(uc.Pub.Allow) != 0 ||
				!slices.Equal(uc.Pub.Deny, jwt.StringList{">"}) || !slices.Equal(uc.Sub.Allow, jwt.StringList(want.Subscribe)) ||
				!slices.Equal(uc.AllowedConnectionTypes, jwt.StringList{jwt.ConnectionTypeWebsocket}) {
				t.Errorf("%s: user %+v, want subscribe %v only", role.Name, uc, want.Subscribe)
			}
			// Every role of this tenant reads its orders and invoices.
			if len(want.Subscribe) != len(mesh.LiveFeeds) {
				t.Errorf("%s: feeds %v", role.Name, want.Subscribe)
			}
			if _, err := decide(t, c, jwt.ConnectionTypeStandard); err == nil {
				t.Error("a person over a plain connection was admitted")
			}
		})
	}
	t.Run("a person without read permissions subscribes to nothing", func(t *testing.T) {
		uc, err := decide(t, &authz.Claims{Subject: "auth0|nobody", ExpiresAt: exp}, jwt.ConnectionTypeWebsocket)
		if err != nil || len(uc.Sub.Allow) != 0 || !slices.Equal(uc.Sub.Deny, jwt.StringList{">"}) {
			t.Errorf("user %+v, %v", uc, err)
		}
	})
	t.Run("an invalid token is refused with the validator's reason", func(t *testing.T) {
		_, err := decide(t, nil, jwt.ConnectionTypeStandard)
		var r *refusal
		if !errors.As(err, &r) || r.reason != "expired" {
			t.Errorf("%v, want the reason expired", err)
		}
	})
}

// TestDPoPBoundTokenNeedsAProofAtConnect: a DPoP-bound token (cnf.jkt) is
// not a bearer token at NATS either: CONNECT must carry a proof of its key
// for this connection's server nonce.
func TestDPoPBoundTokenNeedsAProofAtConnect(t *testing.T) {
	key, other := authztest.NewDPoPKey(t), authztest.NewDPoPKey(t)
	const tok = "the bound access token"
	exp := time.Now().Add(time.Hour)
	bound := &authz.Claims{Subject: "auth0|alice", Permissions: []string{"read:orders"}, ExpiresAt: exp, JKT: key.JKT()}
	proof := func(k *authztest.DPoPKey, over authztest.Claims) string {
		c := k.ProofClaims(ProofMethod, ProofURI, tok)
		c["nonce"] = "server-nonce-1"
		return k.ProofWith(t, nil, c.With(over))
	}
	for _, tc := range []struct {
		name, pass, nonce string
		ok                bool
	}{
		{"a proof for this connection", proof(key, nil), "server-nonce-1", true},
		{"no proof (the token as a bearer token)", "", "server-nonce-1", false},
		{"another connection's nonce", proof(key, nil), "server-nonce-2", false},
		{"no nonce in the proof", proof(key, authztest.Claims{"nonce": nil}), "server-nonce-1", false},
		{"another key", proof(other, nil), "server-nonce-1", false},
		{"an HTTP method", proof(key, authztest.Claims{"htm": "GET"}), "server-nonce-1", false},
		{"an HTTP edge's URI", proof(key, authztest.Claims{"htu": "http://localhost:8402/v1/orders"}), "server-nonce-1", false},
		{"another token", proof(key, authztest.Claims{"ath": authztest.ATH("another token")}), "server-nonce-1", false},
		{"garbage", "not a proof", "server-nonce-1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			co, err := New(Config{Conn: &nats.Conn{}, Validator: claimsValidator{bound}, Keys: mesh.DevKeys})
			if err != nil {
				t.Fatal(err)
			}
			req := request(t, jwt.ConnectionTypeWebsocket)
			req.ConnectOptions.Token, req.ConnectOptions.SignedNonce, req.ClientInformation.Nonce = tok, tc.pass, tc.nonce
			uc, err := co.Decide(context.Background(), req)
			if tc.ok {
				if err != nil || uc.Audience != mesh.LiveAccount {
					t.Fatalf("refused: %v", err)
				}
				// The same proof again (a replay on another connection of
				// the same server nonce cannot happen, but on this one):
				if _, err := co.Decide(context.Background(), req); err == nil {
					t.Error("a proof was accepted twice")
				}
				return
			}
			var r *refusal
			if !errors.As(err, &r) || !strings.HasPrefix(r.reason, "dpop_") {
				t.Fatalf("err = %v, want a dpop_ refusal", err)
			}
		})
	}
	// An unbound token needs no proof (the person's Bearer token as before).
	unbound := *bound
	unbound.JKT = ""
	co, _ := New(Config{Conn: &nats.Conn{}, Validator: claimsValidator{&unbound}, Keys: mesh.DevKeys})
	if _, err := co.Decide(context.Background(), request(t, jwt.ConnectionTypeWebsocket)); err != nil {
		t.Errorf("an unbound token: %v", err)
	}
}
