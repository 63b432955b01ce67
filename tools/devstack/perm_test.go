package devstack

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startTestNATS runs the real deploy/nats configuration on free ports.
func startTestNATS(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := NATSOptions(root, t.TempDir(), "127.0.0.1", -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartNATS(opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// connect returns a connection whose asynchronous permission errors arrive
// on the channel. Like pkg/platform's, it uses the user's own inbox prefix.
func connect(t *testing.T, url, user, password string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.CustomInboxPrefix("_INBOX_"+user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func TestNATSPermissions(t *testing.T) {
	t.Parallel()
	url := startTestNATS(t)

	tests := []struct {
		user    string
		subject string
		allowed bool
	}{
		{"billing", "orders.events.created", false},
		{"billing", "users.events.blocked", false},
		{"billing", "billing.events.invoice.paid", true},
		{"billing", "dlq.billing.orders-events", true},
		{"billing", "dlq.orders.x", false},
		{"billing", "$KV.billing_invoices.inv1", true},
		{"billing", "$KV.orders.o1", false},
		{"billing", "$KV.authmesh_revocations.abc", false},
		{"orders", "orders.events.created", true},
		{"orders", "billing.events.invoice.paid", false},
		{"orders", "authmesh.users.profile", true},
		{"orders", "authmesh.billing.orders.void", true},
		{"orders", "$KV.orders_idempotency.k", true},
		{"orders", "$KV.billing_invoices.inv1", false},
		{"users", "users.events.blocked", true},
		{"users", "orders.events.cancelled", false},
		{"users", "$KV.authmesh_revocations.abc", true},
		{"users", "authmesh.billing.orders.void", false},
		{"users", "$JS.API.INFO", true},
		// Destructive JetStream calls on another service's streams and consumers.
		{"billing", "$JS.API.STREAM.DELETE.KV_authmesh_revocations", false},
		{"billing", "$JS.API.STREAM.PURGE.ORDERS_EVENTS", false},
		{"billing", "$JS.API.STREAM.MSG.DELETE.KV_orders", false},
		{"billing", "$JS.API.STREAM.UPDATE.USERS_EVENTS", false},
		{"orders", "$JS.API.CONSUMER.DELETE.ORDERS_EVENTS.billing-orders", false},
		{"orders", "$JS.API.STREAM.DELETE.BILLING_EVENTS", false},
		{"users", "$JS.API.STREAM.PURGE.KV_billing_invoices", false},
		// Another account's streams are not even visible: billing's own
		// $JS.API has no ORDERS_EVENTS, and its grants are exact names.
		{"billing", "$JS.API.STREAM.INFO.ORDERS_EVENTS", false},
		{"billing", "$JS.API.STREAM.CREATE.EVIL", false},
		{"billing", "JS.ORDERS.API.CONSUMER.CREATE.ORDERS_EVENTS.billing-orders", false},
		{"billing", "JS.ORDERS.API.CONSUMER.MSG.NEXT.ORDERS_EVENTS.billing-orders", true},
		// Another service's inbox is not a place to publish to unasked.
		{"billing", "_INBOX_orders.x", false},
	}
	for _, tc := range tests {
		t.Run(tc.user+"/"+tc.subject, func(t *testing.T) {
			t.Parallel()
			nc, errs := connect(t, url, tc.user, tc.user+"-nats-dev-secret")
			if err := nc.Publish(tc.subject, []byte("{}")); err != nil {
				t.Fatalf("publish: %v", err)
			}
			// A round trip proves the server has processed the publish; a
			// violation is reported asynchronously just before.
			if err := nc.FlushTimeout(2 * time.Second); err != nil {
				t.Fatalf("flush: %v", err)
			}
			var violation error
			select {
			case violation = <-errs:
			case <-time.After(200 * time.Millisecond):
			}
			switch {
			case tc.allowed && violation != nil:
				t.Fatalf("%s publishing %s: unexpected error %v", tc.user, tc.subject, violation)
			case !tc.allowed && !errors.Is(violation, nats.ErrPermissionViolation):
				t.Fatalf("%s publishing %s: want a permissions violation, got %v", tc.user, tc.subject, violation)
			case !tc.allowed && !strings.Contains(violation.Error(), tc.subject):
				t.Fatalf("violation does not name the subject: %v", violation)
			}
		})
	}
}

// TestNATSServiceCallDelivered checks the positive path end to end: a micro
// subject orders may call reaches billing, whose reply reaches orders' own
// inbox (billing may answer the request: allow_responses).
func TestNATSServiceCallDelivered(t *testing.T) {
	t.Parallel()
	url := startTestNATS(t)
	orders, _ := connect(t, url, "orders", "orders-nats-dev-secret")
	billing, _ := connect(t, url, "billing", "billing-nats-dev-secret")

	if _, err := billing.Subscribe("authmesh.billing.orders.void", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"status":"void"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := billing.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := orders.Request("authmesh.billing.orders.void", []byte(`{"order_id":"o1"}`), 2*time.Second)
	if err != nil {
		t.Fatalf("orders' request to billing: %v", err)
	}
	if string(reply.Data) != `{"status":"void"}` {
		t.Fatalf("reply %q", reply.Data)
	}
}

// TestNATSInboxesArePrivate: a service cannot subscribe to the shared inbox
// space or another service's inboxes, so it never sees their replies or
// JetStream deliveries; its own inboxes work.
func TestNATSInboxesArePrivate(t *testing.T) {
	t.Parallel()
	url := startTestNATS(t)
	for _, tc := range []struct {
		user, subject string
		allowed       bool
	}{
		{"billing", "_INBOX.>", false},
		{"billing", "_INBOX_orders.>", false},
		{"orders", ">", false},
		{"billing", "_INBOX_billing.x", true},
	} {
		t.Run(tc.user+"/"+tc.subject, func(t *testing.T) {
			t.Parallel()
			nc, errs := connect(t, url, tc.user, tc.user+"-nats-dev-secret")
			if _, err := nc.SubscribeSync(tc.subject); err != nil {
				t.Fatal(err)
			}
			if err := nc.FlushTimeout(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			var violation error
			select {
			case violation = <-errs:
			case <-time.After(200 * time.Millisecond):
			}
			if tc.allowed != (violation == nil) || (!tc.allowed && !errors.Is(violation, nats.ErrPermissionViolation)) {
				t.Fatalf("%s subscribing %s: allowed=%v, violation %v", tc.user, tc.subject, tc.allowed, violation)
			}
		})
	}
}

func TestNATSRejectsWrongPassword(t *testing.T) {
	t.Parallel()
	url := startTestNATS(t)
	for _, tc := range []struct{ user, password string }{
		{"billing", "orders-nats-dev-secret"},
		{"billing", ""},
		{"admin", "admin"},
	} {
		if nc, err := nats.Connect(url, nats.UserInfo(tc.user, tc.password)); err == nil {
			nc.Close()
			t.Fatalf("connect as %s/%q succeeded", tc.user, tc.password)
		}
	}
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("anonymous connect succeeded")
	}
}

// TestNATSKubernetesConfig loads the cluster configuration deploy/k8s/nats
// mounts: the passwords come from the environment and the permissions are the
// same shared ones the dev configuration uses.
func TestNATSKubernetesConfig(t *testing.T) {
	for _, s := range []string{"users", "orders", "billing", "tts"} {
		t.Setenv(strings.ToUpper(s)+"_NATS_PASSWORD", s+"-from-secret")
	}
	// Kubernetes mounts passwords-env.conf as passwords.conf (deploy/nats/kustomization.yaml).
	dir := t.TempDir()
	for dst, src := range map[string]string{"cluster-k8s.conf": "cluster-k8s.conf", "accounts.conf": "accounts.conf", "passwords.conf": "passwords-env.conf"} {
		b, err := os.ReadFile("../../deploy/nats/" + src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k8s, err := server.ProcessConfigFile(filepath.Join(dir, "cluster-k8s.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := server.ProcessConfigFile("../../deploy/nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(k8s.Users) != len(Services) || len(dev.Users) != len(Services) {
		t.Fatalf("users: k8s %d, dev %d; want %d each", len(k8s.Users), len(dev.Users), len(Services))
	}
	for _, u := range k8s.Users {
		if u.Password != u.Username+"-from-secret" {
			t.Errorf("%s: password not taken from %s_NATS_PASSWORD", u.Username, strings.ToUpper(u.Username))
		}
		i := slices.IndexFunc(dev.Users, func(d *server.User) bool { return d.Username == u.Username })
		if i < 0 || dev.Users[i].Account.Name != u.Account.Name || !reflect.DeepEqual(dev.Users[i].Permissions, u.Permissions) {
			t.Errorf("%s: permissions differ between the k8s and dev configurations", u.Username)
		}
	}
	if len(k8s.Routes) != 3 || k8s.Cluster.Name != "authmesh" {
		t.Errorf("cluster %q with %d routes, want authmesh with 3", k8s.Cluster.Name, len(k8s.Routes))
	}
}
