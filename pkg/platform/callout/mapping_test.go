package callout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"gopkg.in/yaml.v3"

	"github.com/authmesh/authmesh/pkg/authz"
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

func request(t *testing.T, connType string) *jwt.AuthorizationRequestClaims {
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
