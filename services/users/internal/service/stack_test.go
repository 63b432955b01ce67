package service

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/services/tts/ttstest"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// The stack's fixed names: devtenant's issuer is the contract's, whatever
// port the test server got (the expected issuer and where keys are fetched
// are separate settings, as with Auth0 custom domains).
const (
	issuer   = "http://localhost:8400/"
	audience = "https://api.authmesh.dev"
	mgmtAud  = "http://localhost:8400/api/v2/"

	aliceID = "auth0|6553da60a54af58e29493991"
	bobID   = "auth0|6553da60a54af58e29493992"
	carolID = "auth0|6553da60a54af58e29493993"
	daveID  = "auth0|6553da60a54af58e29493994"
)

// stack is an in-process nats-server with the mesh's accounts, devtenant,
// the real Transaction Token Service and the users service.
type stack struct {
	t    *testing.T
	nats *server.Server
	// nc is the orders service's connection: the tests call the profile
	// endpoint as orders. js is the users service's own account.
	nc     *nats.Conn
	js     jetstream.JetStream
	tenant *tenant.Server
	tenURL string
	base   string // the users service, http://127.0.0.1:port

	mgmtCalls atomic.Int64 // requests to devtenant's Management API
	// mgmtDown makes the Management API and the token endpoint unreachable
	// (the connection is dropped); keys are still served.
	mgmtDown  atomic.Bool
	cfg       platform.Config
	stopUsers func() // stops the instance at base

	// orders exchanges tokens as the orders service does (its own M2M
	// token as the actor); txn verifies what users sends.
	orders *natsauth.TxnClient
	txn    *authz.TxnValidator
}

func startStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t}

	ns := meshtest.Start(t)
	s.nats = ns
	nc, _ := meshtest.Connect(t, ns, mesh.Orders)
	s.nc = nc
	_, s.js = meshtest.Connect(t, ns, mesh.Users)

	ten, err := tenant.New(tenant.Config{
		Issuer:     issuer,
		TenantFile: "../../../../deploy/tenant.yaml",
		DevDir:     "../../../../deploy/dev",
		DataDir:    t.TempDir(),
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("devtenant: %v", err)
	}
	t.Cleanup(func() { _ = ten.Close() })
	th := ten.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	t.Cleanup(ts.Close)
	s.tenant, s.tenURL = ten, ts.URL

	// The revocation bucket is users' own, but the TTS, started first,
	// waits for it.
	if _, err := natsauth.NewRevocationStore(context.Background(), s.js, 1); err != nil {
		t.Fatal(err)
	}
	tts := ttstest.Start(t, ttstest.Config{NATSURL: ns.ClientURL(), Issuer: issuer, JWKSURL: ts.URL + "/.well-known/jwks.json"})
	if s.orders, err = natsauth.NewTxnClient(natsauth.TxnClientConfig{Conn: nc, Actor: staticToken(s.clientToken("orders-service"))}); err != nil {
		t.Fatal(err)
	}
	s.txn = txnValidator(t, tts.JWKSURL)

	env := map[string]string{
		"AUTH0_ISSUER":          issuer,
		"AUTH0_AUDIENCE":        audience,
		"AUTH0_JWKS_URL":        ts.URL + "/.well-known/jwks.json",
		"AUTH0_TOKEN_URL":       ts.URL + "/oauth/token",
		"USERS_MGMT_URL":        ts.URL + "/api/v2/",
		"USERS_MGMT_AUDIENCE":   mgmtAud,
		"USERS_NATS_URL":        ns.ClientURL(),
		"USERS_LOG_LEVEL":       "error",
		"AUTH0_TENANT_FILE":     "../../../../deploy/tenant.yaml",
		"AUTHMESH_TTS_JWKS_URL": tts.JWKSURL,
	}
	cfg, err := platform.LoadConfig("users", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	s.base, s.stopUsers = s.startUsers()
	return s
}

// startUsers runs one users service on the stack and waits until it is
// ready; stop shuts it down (also at the end of the test).
func (s *stack) startUsers() (base string, stop func()) {
	t := s.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, s.cfg, platform.Options{
			Listener: ln,
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, Tuning{})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("service did not shut down")
			}
		})
	}
	t.Cleanup(stop)
	base = "http://" + ln.Addr().String()
	s.waitReady(base)
	return base, stop
}

func (s *stack) waitReady(base string) {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal("users service not ready within 15 s")
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

func txnValidator(t *testing.T, jwks string) *authz.TxnValidator {
	t.Helper()
	kp, err := authz.NewKeyProvider(authz.WithJWKSURL(jwks), authz.WithAlgorithm("ES256"), authz.WithRefetchCooldown(0))
	if err != nil {
		t.Fatal(err)
	}
	v, err := authz.NewTxnValidator(kp, authz.WithIssuers(authz.DefaultTxnIssuer), authz.WithAudiences(authz.DefaultTrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// asOrders is the context the orders service sends under while serving
// token's holder: the access token, exchanged by orders' own client for a
// transaction token narrowed to each message's hop ("" is no identity).
func (s *stack) asOrders(ctx context.Context, token string) context.Context {
	ctx = natsauth.WithOutbound(ctx, &natsauth.Outbound{Exchanger: s.orders, Scopes: mesh.HopScopes})
	if token == "" {
		return ctx
	}
	return authz.WithClaims(ctx, nil, token)
}

// forwarding is the context of a handler that received tok as its
// transaction token: natsauth forwards it unmodified.
func forwarding(ctx context.Context, tok string) context.Context {
	return authz.WithClaims(ctx, &authz.Claims{Txn: "received"}, tok)
}

func (s *stack) userToken(email string) string {
	s.t.Helper()
	tok, err := s.tenant.IssueUserToken(email, audience, "")
	if err != nil {
		s.t.Fatalf("token for %s: %v", email, err)
	}
	return tok
}

func (s *stack) clientToken(clientID string) string {
	s.t.Helper()
	tok, err := s.tenant.IssueClientToken(clientID, audience)
	if err != nil {
		s.t.Fatalf("token for %s: %v", clientID, err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	r.json(t, &e)
	if e.Message == "" {
		t.Fatalf("error body without message: %s", r.body)
	}
	return e.Error
}

func (s *stack) do(method, path, token, body string) response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}
