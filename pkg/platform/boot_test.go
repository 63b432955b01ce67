package platform

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// TestServeNATSAfterSetUp: the endpoints subscribe only once the set-up
// step before them succeeded, so a replica without its stores takes no
// requests, and /readyz reports them until they do.
func TestServeNATSAfterSetUp(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	tts := authztest.NewTxnIssuer(t)
	srv := is.startNATS(t)
	a, base := newServedApp(t, context.Background(), is.billingConfig(t, map[string]string{
		"BILLING_NATS_URL": srv.ClientURL(), "AUTHMESH_TTS_JWKS_URL": tts.JWKSURL()}), Options{})
	release := make(chan struct{})
	a.SetUp("stores", func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	m, err := natsauth.NewMetrics(a.Registry)
	if err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{})
	a.ServeNATS(micro.Config{Name: "billing", Version: "1.0.0"}, m, func(ms *natsauth.Service) error {
		close(registered)
		return ms.AddEndpoint("void", mesh.VoidSubject, authz.RequireAll("cancel:orders").Users(),
			func(ctx context.Context, req micro.Request) { _ = req.Respond([]byte("ok")) })
	})
	runInBackground(t, a)

	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case <-registered:
			t.Fatal("the endpoints were added before the set-up step succeeded")
		default:
		}
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("ready before the set-up step and the endpoints")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	waitReady(t, base)
	select {
	case <-registered:
	default:
		t.Fatal("ready, and the endpoints were never added")
	}
	// Ready means subscribed: the endpoint answers orders at once (here with
	// the denial of a request that carries no transaction token).
	orders, _ := meshtest.Connect(t, srv, mesh.Orders)
	reply, err := orders.Request(mesh.VoidSubject, nil, 2*time.Second)
	if err != nil {
		t.Fatalf("request once ready: %v", err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "401" {
		t.Fatalf("request without a token answered %q %q, want 401", code, reply.Header.Get(micro.ErrorHeader))
	}
}

// TestBootClosesNATSWhenWiringFails: a service whose wiring fails returns
// the error, leaves neither the NATS connection nor New's background loops
// running, and never runs.
func TestBootClosesNATSWhenWiringFails(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	errWire := errors.New("no bucket for you")
	var wired *App
	err := Boot(context.Background(), is.billingConfig(t, nil), Options{BeforeRun: func(*App) { t.Error("BeforeRun after a failed wiring") }},
		func(a *App) error {
			wired = a
			return errWire
		})
	if !errors.Is(err, errWire) {
		t.Fatalf("Boot = %v, want the wiring's error", err)
	}
	if wired == nil || !wired.NATS.IsClosed() {
		t.Fatal("the NATS connection New opened is still open")
	}
	if wired.Context().Err() == nil {
		t.Fatal("the app's context, which New's background loops run under, was not cancelled")
	}
}
