package mesh_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

// routePassword stands for the cluster's secret (compose: its development
// default; Kubernetes: the Secret nats-route).
const routePassword = "test-route-password"

// TestClusterRoutesNeedThePassword: a route carries every account's traffic
// past the auth callout, so the cluster configurations as deployed
// (deploy/nats/cluster.conf for compose, cluster-k8s.conf for Kubernetes)
// admit only a route that presents the cluster password. The attack: a
// process that reaches a node's cluster port (a compromised service on the
// same network) starts its own nats-server with the cluster's name and an
// account named like a victim's, and routes to the node; had it joined, its
// own password user would read and write that account's subjects, KV
// writes included (a review showed it forging an invoice and erasing a
// revocation). Here it never joins, with no password, a wrong one or
// another user's name, while nodes that hold the password form the cluster
// (the explicit route and the ones gossip adds).
func TestClusterRoutesNeedThePassword(t *testing.T) {
	for _, file := range []string{"cluster.conf", "cluster-k8s.conf"} {
		t.Run(file, func(t *testing.T) {
			t.Setenv("NATS_ROUTE_PASSWORD", routePassword)
			nodes := []*server.Server{natstest.Run(t, clusterNode(t, file, "nats-1", nil))}
			seed := routeURL(nodes[0], url.UserPassword("route", routePassword))
			for _, name := range []string{"nats-2", "nats-3"} {
				nodes = append(nodes, natstest.Run(t, clusterNode(t, file, name, seed)))
			}
			authztest.Eventually(t, 15*time.Second, func() bool {
				return nodes[0].NumRemotes() == 2 && nodes[1].NumRemotes() == 2 && nodes[2].NumRemotes() == 2
			}, "a cluster of three")
			victim := nodes[1]

			rogues := map[string]*server.Server{}
			for name, user := range map[string]*url.Userinfo{
				"no password":    nil,
				"wrong password": url.UserPassword("route", "guess"),
				"another user":   url.UserPassword("admin", routePassword),
			} {
				// What an attacker can configure: the cluster's name, an
				// account named like a victim's, a user of its own in it.
				acc := server.NewAccount("BILLING")
				rogues[name] = natstest.Run(t, &server.Options{
					ServerName: "rogue-" + strings.ReplaceAll(name, " ", "-"), Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
					Cluster:  server.ClusterOpts{Name: "authmesh", Host: "127.0.0.1", Port: server.RANDOM_PORT},
					Routes:   routeURL(victim, user),
					Accounts: []*server.Account{acc},
					Users:    []*server.User{{Username: "evil", Password: "x", Account: acc}},
				})
			}
			// Routes are retried every second: give them a few tries.
			time.Sleep(3 * time.Second)
			for name, rogue := range rogues {
				if rogue.NumRemotes() != 0 {
					t.Errorf("%s: the rogue server has %d routes, want 0", name, rogue.NumRemotes())
				}
			}
			if n := victim.NumRemotes(); n != 2 {
				t.Errorf("the victim has %d routes, want its 2 peers", n)
			}
		})
	}
}

// TestClusterNodeNeedsARoutePassword: a node started from a cluster
// configuration without NATS_ROUTE_PASSWORD in its environment refuses to
// start, naming the variable, rather than open its cluster port to anyone.
func TestClusterNodeNeedsARoutePassword(t *testing.T) {
	t.Setenv("NATS_ROUTE_PASSWORD", "") // restored after the test
	if err := os.Unsetenv("NATS_ROUTE_PASSWORD"); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"cluster.conf", "cluster-k8s.conf"} {
		_, err := server.ProcessConfigFile(filepath.Join("..", "..", "..", "deploy", "nats", file))
		if err == nil || !strings.Contains(err.Error(), "NATS_ROUTE_PASSWORD") {
			t.Errorf("%s without NATS_ROUTE_PASSWORD: %v, want an error naming it", file, err)
		}
	}
}

// clusterNode is file's configuration for one node on loopback: random
// client, cluster and WebSocket ports, no monitoring port, no JetStream
// (routes are what is tested, and a JetStream cluster would wait for
// quorum), routes to seed as deployed.
func clusterNode(t *testing.T, file, name string, seed []*url.URL) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "..", "deploy", "nats", file))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if opts.Cluster.Username == "" || opts.Cluster.Password != routePassword {
		t.Fatalf("%s: cluster authorization user %q, password from the environment %v", file, opts.Cluster.Username, opts.Cluster.Password == routePassword)
	}
	opts.ServerName = name
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", server.RANDOM_PORT
	opts.Websocket.Host, opts.Websocket.Port = "127.0.0.1", server.RANDOM_PORT
	opts.Routes = seed
	opts.JetStream, opts.StoreDir = false, ""
	opts.NoLog, opts.NoSigs = true, true
	return opts
}

// routeURL is a route to s's cluster port with user's credentials (none if nil).
func routeURL(s *server.Server, user *url.Userinfo) []*url.URL {
	addr := s.ClusterAddr()
	u := &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", addr.Port), User: user}
	return []*url.URL{u}
}
