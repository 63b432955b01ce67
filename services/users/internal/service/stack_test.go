package service

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/pkg/platform/platformtest"
	"github.com/authmesh/authmesh/services/tts/ttstest"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// The stack's fixed names: devtenant's issuer is the contract's, whatever
// port the test server got (the expected issuer and where keys are fetched
// are separate settings, as with Auth0 custom domains).
const (
	issuer   = "http://localhost:8400/"
	audience = ttstest.Audience
	mgmtAud  = "http://localhost:8400/api/v2/"

	aliceID = "auth0|6553da60a54af58e29493991"
	bobID   = "auth0|6553da60a54af58e29493992"
	carolID = "auth0|6553da60a54af58e29493993"
	daveID  = "auth0|6553da60a54af58e29493994"
)

// stack is an in-process nats-server with the mesh's accounts, devtenant,
// the real Transaction Token Service and the users service.
type stack struct {
	t  *testing.T
	ms *ttstest.Stack
	// nc is the orders service's connection: the tests call the profile
	// endpoint as orders. js is the users service's own account.
	nc     *nats.Conn
	js     jetstream.JetStream
	tenant *tenant.Server
	base   string // the users service, http://127.0.0.1:port

	mgmtCalls atomic.Int64 // requests to devtenant's Management API
	// mgmtDown makes the Management API and the token endpoint unreachable
	// (the connection is dropped); keys are still served.
	mgmtDown  atomic.Bool
	cfg       platform.Config
	stopUsers func() // stops the instance at base

	// orders exchanges tokens as the orders service does (its own M2M
	// token as the actor); txn verifies what users sends.
	orders *ttstest.Peer
	txn    *authz.TxnValidator
}

func startStack(t *testing.T) *stack { return startStackWith(t, "") }

// startStackWith is startStack with devtenant issuing tokens in dialect
// ("" is deploy/tenant.yaml's).
func startStackWith(t *testing.T, dialect string) *stack {
	t.Helper()
	s := &stack{t: t}
	ms := ttstest.NewStack(t, ttstest.StackConfig{Issuer: issuer, Wrap: s.tenantFront, TokenDialect: dialect})
	s.ms, s.tenant = ms, ms.Tenant
	_, s.js = meshtest.Connect(t, ms.NATS, mesh.Users)

	// The revocation bucket is users' own, but the TTS, started first,
	// waits for it: the stack creates it in users' place.
	tts := ms.StartTTS(t, nil)
	orders := ms.Peer(t, mesh.Orders)
	s.nc, s.orders = orders.NC, orders
	s.txn = ttstest.TxnValidator(t, tts.JWKSURL)
	s.cfg = ms.ServiceConfig(t, "users", tts, map[string]string{
		"AUTH0_AUDIENCE":      audience,
		"AUTH0_JWKS_URL":      ms.JWKSURL,
		"AUTH0_TOKEN_URL":     ms.TenantURL + "/oauth/token",
		"USERS_MGMT_URL":      ms.TenantURL + "/api/v2/",
		"USERS_MGMT_AUDIENCE": mgmtAud,
		"USERS_LOG_LEVEL":     "error",
	})
	s.base, s.stopUsers = s.startUsers()
	return s
}

// tenantFront counts the tenant's Management API requests and, while
// mgmtDown is set, drops the connections to it and to the token endpoint.
func (s *stack) tenantFront(th http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v2/") {
			s.mgmtCalls.Add(1)
		}
		if s.mgmtDown.Load() && (strings.HasPrefix(r.URL.Path, "/api/v2/") || r.URL.Path == "/oauth/token") {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		th.ServeHTTP(w, r)
	})
}

// startUsers runs one users service on the stack and waits until it is
// ready; stop shuts it down (also at the end of the test).
func (s *stack) startUsers() (base string, stop func()) {
	s.t.Helper()
	return platformtest.Serve(s.t, func(ctx context.Context, opts platform.Options) error {
		return RunWith(ctx, s.cfg, opts, Tuning{})
	})
}

// asOrders is the context the orders service sends under while serving
// token's holder: the access token, exchanged by orders' own client for a
// transaction token narrowed to each message's hop ("" is no identity).
func (s *stack) asOrders(ctx context.Context, token string) context.Context {
	return s.orders.Outbound(ctx, token)
}

// forwarding is the context of a handler that received tok as its
// transaction token: natsauth forwards it unmodified.
func forwarding(ctx context.Context, tok string) context.Context {
	return authz.WithClaims(ctx, &authz.Claims{Txn: "received"}, tok)
}

func (s *stack) userToken(email string) string { return s.ms.UserToken(s.t, email, "") }

func (s *stack) clientToken(clientID string) string { return s.ms.ClientToken(s.t, clientID) }

type response = platformtest.Response

// errorCode is the error code of an error answer, which must say why.
func errorCode(t *testing.T, r response) string {
	t.Helper()
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	r.JSON(t, &e)
	if e.Message == "" {
		t.Fatalf("error body without message: %s", r.Body)
	}
	return e.Error
}

func (s *stack) do(method, path, token, body string) response {
	s.t.Helper()
	return platformtest.Do(s.t, method, s.base+path, token, body)
}
