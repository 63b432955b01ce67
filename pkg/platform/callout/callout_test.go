package callout_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// tenant is a test tenant the callout trusts, with revocations.
type tenant struct {
	iss     *authztest.Issuer
	revoked *authztest.Revocations
	s       *server.Server
	ws      string // the WebSocket listener: ws://127.0.0.1:port
}

// start runs the mesh's server (real configuration, WebSocket on) with the
// callout trusting a test tenant.
func start(t *testing.T) *tenant {
	t.Helper()
	tn := &tenant{iss: authztest.NewIssuer(t), revoked: &authztest.Revocations{}}
	v := meshtest.Validator(t, tn.iss.JWKSURL(), tn.iss.Issuer(), authztest.Audience, authz.WithRevocations(tn.revoked))
	tn.s = meshtest.StartWith(t, meshtest.Options{
		Validator: v,
		Token: func(tb testing.TB, w string) string {
			return tn.iss.M2MToken(tb, w+"-service", "")
		},
		Server: func(o *server.Options) {
			o.Websocket.Host, o.Websocket.Port, o.Websocket.NoTLS = "127.0.0.1", -1, true
		},
	})
	tn.ws = tn.s.WebsocketURL()
	return tn
}

// person is a user token with permissions.
func (tn *tenant) person(t *testing.T, sub string, perms ...string) string {
	return tn.iss.Token(t, authztest.Claims{"sub": sub, "permissions": perms})
}

// connect connects with tok and collects async errors.
func connect(url, tok string, opts ...nats.Option) (*nats.Conn, chan error, error) {
	errs := make(chan error, 16)
	opts = append(opts, nats.Token(tok), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	nc, err := nats.Connect(url, opts...)
	return nc, errs, err
}

func TestWorkloadConnectsWithItsClientToken(t *testing.T) {
	tn := start(t)
	nc, js := meshtest.Connect(t, tn.s, mesh.Orders)
	// Its own stream's API is allowed; another's is not.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mesh.Provision(ctx, js, mesh.Orders, 1); err != nil {
		t.Fatalf("orders provisions its own streams: %v", err)
	}
	if _, err := nc.Request("$JS.API.STREAM.INFO.BILLING_EVENTS", nil, time.Second); err == nil {
		t.Error("orders reached billing's stream API")
	}
}

// An API in the RFC 9068 profile issues client-credentials tokens with
// client_id and no azp or gty: the callout maps the workload by client_id
// (Claims.Client) and by sub, as it does an Auth0-profile token by azp.
func TestWorkloadConnectsWithRFC9068Token(t *testing.T) {
	tn := start(t)
	nc, _, err := connect(tn.s.ClientURL(), tn.iss.RFC9068M2MToken(t, "orders-service", ""), nats.CustomInboxPrefix("_INBOX_orders"))
	if err != nil {
		t.Fatalf("orders with an RFC 9068 token: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mesh.Provision(ctx, js, mesh.Orders, 1); err != nil {
		t.Fatalf("orders provisions its own streams: %v", err)
	}
	// An unknown client is still refused, whichever claim names it.
	if nc, _, err := connect(tn.s.ClientURL(), tn.iss.RFC9068M2MToken(t, "tenant-admin", "")); err == nil {
		nc.Close()
		t.Fatal("an RFC 9068 token of a client that is no workload connected")
	}
}

func TestWorkloadIsDisconnectedWhenItsTokenExpires(t *testing.T) {
	tn := start(t)
	closed := make(chan error, 1)
	tok := tn.iss.Token(t, authztest.Claims{"sub": "orders-service@clients", "azp": "orders-service",
		"gty": "client-credentials", "exp": time.Now().Add(2 * time.Second).Unix()})
	nc, errs, err := connect(tn.s.ClientURL(), tok, nats.CustomInboxPrefix("_INBOX_orders"),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { closed <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-closed:
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrAuthExpired) {
				t.Errorf("disconnected with %v, want authentication expired", err)
			}
		case <-time.After(time.Second):
			t.Error("disconnected without saying the authentication expired")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still connected after the token expired")
	}
}

// TestRefusedAtConnect: what the server refuses for who connects where; the
// forged, expired and misdirected tokens are TestDecideRefusesAccessAttacks's.
func TestRefusedAtConnect(t *testing.T) {
	tn := start(t)
	url := tn.s.ClientURL()
	tn.revoked.Revoke("auth0|blocked", time.Now().Add(time.Minute))
	for _, c := range []struct {
		name, url, tok string
	}{
		{"no token", url, ""},
		{"unknown client", url, tn.iss.M2MToken(t, "tenant-admin", "")},
		{"the TTS's name is not a client", url, tn.iss.M2MToken(t, "tts-service", "")},
		{"person on a plain connection", url, tn.person(t, "auth0|bob", "read:orders")},
		{"workload on WebSocket", tn.ws, tn.iss.M2MToken(t, "orders-service", "")},
		{"blocked person", tn.ws, tn.person(t, "auth0|blocked", "read:orders")},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, _, err := connect(c.url, c.tok)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("error %v: want an authorization error", err)
			}
		})
	}
}

func TestPersonSubscribesToOwnFeedsOnly(t *testing.T) {
	tn := start(t)
	orders, _ := meshtest.Connect(t, tn.s, mesh.Orders)
	bob, errs, err := connect(tn.ws, tn.person(t, "auth0|bob", "read:orders"))
	if err != nil {
		t.Fatalf("bob over WebSocket: %v", err)
	}
	defer bob.Close()
	own, err := bob.SubscribeSync(mesh.LivePrefix + "." + mesh.LiveUID("auth0|bob") + ".orders.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{
		mesh.LivePrefix + "." + mesh.LiveUID("auth0|alice") + ".orders.>", // alice's
		mesh.LivePrefix + ".>", // everyone's
		mesh.LivePrefix + "." + mesh.LiveUID("auth0|bob") + ".invoices.>", // no read:invoices
		"orders.events.>",
	} {
		if _, err := bob.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("subscribe %s: %v, want a permissions violation", subj, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("subscribe %s: no permissions violation", subj)
		}
	}
	if err := bob.Publish(mesh.LiveSubject("auth0|bob", "orders", "o1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("publish: %v, want a permissions violation", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("a person published")
	}
	// orders publishes to bob and to alice: bob gets his only.
	for _, sub := range []string{"auth0|alice", "auth0|bob"} {
		if err := orders.Publish(mesh.LiveSubject(sub, "orders", "o1"), []byte(sub)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := own.NextMsg(2 * time.Second)
	if err != nil || string(m.Data) != "auth0|bob" {
		t.Fatalf("bob's feed: %v %v", m, err)
	}
	if m, err := own.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("bob received %q", m.Data)
	}
}

func TestKickClosesRevokedPersonWithinASecond(t *testing.T) {
	tn := start(t)
	sys := connectSys(t, tn.s)
	closed := make(chan struct{})
	alice, _, err := connect(tn.ws, tn.person(t, "auth0|alice", "read:orders"),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, _, err := connect(tn.ws, tn.person(t, "auth0|bob", "read:orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	start := time.Now()
	tn.revoked.Revoke("auth0|alice", time.Now().Add(time.Minute))
	n, err := callout.Kick(context.Background(), sys, "auth0|alice")
	if err != nil || n != 1 {
		t.Fatalf("kick: %d, %v; want 1 connection", n, err)
	}
	select {
	case <-closed:
	case <-time.After(time.Second - time.Since(start)):
		t.Fatal("alice's connection still open a second after her block")
	}
	if !bob.IsConnected() {
		t.Error("bob was kicked too")
	}
	if nc, _, err := connect(tn.ws, tn.person(t, "auth0|alice", "read:orders")); err == nil {
		nc.Close()
		t.Error("alice reconnected after her block")
	}
}

func connectSys(t *testing.T, s *server.Server) *nats.Conn {
	t.Helper()
	nk, err := callout.NKey(mesh.DevKeys.System)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nk, nats.CustomInboxPrefix(mesh.SystemInboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestCalloutDownRefusesNewConnectionsOnly(t *testing.T) {
	tn := start(t)
	_, orders := meshtest.Connect(t, tn.s, mesh.Orders)
	meshtest.StopCallout(tn.s)
	begin := time.Now()
	nc, _, err := connect(tn.s.ClientURL(), meshtest.Token(t, tn.s, mesh.Billing), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("connected with nobody answering the callout")
	}
	if took := time.Since(begin); took > 4*time.Second {
		t.Errorf("refusal took %v: the server's wait for the callout is not bounded", took)
	}
	// The open connection keeps its user: a request its permissions allow
	// is answered.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := orders.AccountInfo(ctx); err != nil {
		t.Errorf("orders' open connection stopped working: %v", err)
	}
}

func TestTransactionTokenRefusedAtConnect(t *testing.T) {
	tn := start(t)
	txn := authztest.NewTxnIssuer(t)
	tok := txn.Token(t, "auth0|alice", "read:orders", nil)
	for _, url := range []string{tn.s.ClientURL(), tn.ws} {
		if nc, _, err := connect(url, tok); err == nil {
			nc.Close()
			t.Errorf("%s: a transaction token connected", url)
		}
	}
}

// loadingRevocations is a revocation list that never finishes loading.
type loadingRevocations struct{ authztest.Revocations }

func (*loadingRevocations) Ready() error { return errors.New("revocation bucket not found") }

// TestWorkloadsConnectWhileRevocationsLoad: on a fresh system the
// revocation list's bucket does not exist until the users service creates
// it, and the users service connects through the callout. While the list
// loads, workloads' tokens pass (with Config.Workloads; revocations block
// people only) and people's do not.
func TestWorkloadsConnectWhileRevocationsLoad(t *testing.T) {
	iss := authztest.NewIssuer(t)
	full := meshtest.Validator(t, iss.JWKSURL(), iss.Issuer(), authztest.Audience, authz.WithRevocations(&loadingRevocations{}))
	workloads := meshtest.Validator(t, iss.JWKSURL(), iss.Issuer(), authztest.Audience)
	s := meshtest.StartWith(t, meshtest.Options{
		Validator: full,
		Token:     func(tb testing.TB, w string) string { return iss.M2MToken(tb, w+"-service", "") },
		Server: func(o *server.Options) {
			o.Websocket.Host, o.Websocket.Port, o.Websocket.NoTLS = "127.0.0.1", -1, true
		},
	})
	users := iss.M2MToken(t, "users-service", "")
	person := iss.Token(t, authztest.Claims{"sub": "auth0|alice", "permissions": []string{"read:orders"}})

	// Without Workloads (meshtest's callout), nobody gets in.
	if nc, _, err := connect(s.ClientURL(), users, nats.CustomInboxPrefix("_INBOX_users")); err == nil {
		nc.Close()
		t.Fatal("a workload connected while the revocations load, without Config.Workloads")
	}

	meshtest.StopCallout(s)
	nk, err := callout.NKey(mesh.DevKeys.Service)
	if err != nil {
		t.Fatal(err)
	}
	own, err := nats.Connect(s.ClientURL(), nk, nats.CustomInboxPrefix(mesh.CalloutWorkload().InboxPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	c, err := callout.New(callout.Config{Conn: own, Validator: full, Workloads: workloads,
		Clients: meshtest.DevClients(), Keys: mesh.DevKeys, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	nc, _, err := connect(s.ClientURL(), users, nats.CustomInboxPrefix("_INBOX_users"))
	if err != nil {
		t.Fatalf("users while the revocations load: %v", err)
	}
	nc.Close()
	if nc, _, err := connect(s.WebsocketURL(), person); err == nil {
		nc.Close()
		t.Fatal("a person connected while the revocations load")
	}
	// Workloads does not widen who is a workload: an unknown client stays out.
	if nc, _, err := connect(s.ClientURL(), iss.M2MToken(t, "tenant-admin", "")); err == nil {
		nc.Close()
		t.Fatal("an unknown client connected")
	}
}
