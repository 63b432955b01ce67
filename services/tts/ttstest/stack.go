package ttstest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
	"github.com/authmesh/authmesh/tools/devtenant/tenanttest"
)

// Audience is the API the development tenant issues access tokens for.
const Audience = "https://api.authmesh.dev"

// StackConfig shapes the tenant; the zero value is the usual stack.
type StackConfig struct {
	// Issuer, when set, is the tenant's issuer whatever port it is served
	// on (the contract's http://localhost:8400/): the expected issuer and
	// where keys are fetched are separate settings, as with Auth0 custom
	// domains. Default: the URL it is served on.
	Issuer string
	// Wrap, when set, wraps the tenant's handler (to count requests or drop
	// them).
	Wrap func(http.Handler) http.Handler
	// NATS, when set, adjusts the NATS server's options (a WebSocket
	// listener ...).
	NATS func(*server.Options)
	// TokenDialect, when set, replaces the API's token_dialect in the
	// tenant devtenant serves (rfc9068_profile_authz: RFC 9068 tokens, typ
	// at+jwt with client_id and jti); the services' AUTH0_TENANT_FILE stays
	// deploy/tenant.yaml, whose permissions are the same.
	TokenDialect string
}

// Stack is what a service's component test stands on: an in-process NATS
// server with the mesh's accounts, devtenant on a loopback port, and the
// revocation bucket (owned by the users service; the TTS and every
// validator wait for it). All of it stops with the test.
type Stack struct {
	NATS      *server.Server
	Tenant    *tenant.Server
	TenantURL string // where the tenant is served: http://127.0.0.1:port
	Issuer    string
	JWKSURL   string // the tenant's keys
	// TenantFile is deploy/tenant.yaml (the services' AUTH0_TENANT_FILE).
	TenantFile string
}

// NewStack starts NATS and the tenant, and creates the revocation bucket
// as the users service does.
func NewStack(tb testing.TB, cfg StackConfig) *Stack {
	tb.Helper()
	deploy := deployDir()
	s := &Stack{TenantFile: filepath.Join(deploy, "tenant.yaml")}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("ttstest: listen: %v", err)
	}
	s.TenantURL = "http://" + ln.Addr().String()
	s.Issuer, s.JWKSURL = cfg.Issuer, s.TenantURL+"/.well-known/jwks.json"
	if s.Issuer == "" {
		s.Issuer = s.TenantURL + "/"
	}
	served := s.TenantFile
	if cfg.TokenDialect != "" {
		served = tenanttest.WithDialect(tb, s.TenantFile, cfg.TokenDialect)
	}
	s.Tenant, err = tenant.New(tenant.Config{Issuer: s.Issuer, TenantFile: served, DevDir: filepath.Join(deploy, "dev"),
		DataDir: tb.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("ttstest: devtenant: %v", err)
	}
	tb.Cleanup(func() { _ = s.Tenant.Close() })
	h := s.Tenant.Handler()
	if cfg.Wrap != nil {
		h = cfg.Wrap(h)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.Listener = ln
	ts.Start()
	tb.Cleanup(ts.Close)
	// Until a TTS runs, meshtest answers the auth callout, trusting this
	// tenant as the TTS would.
	s.NATS = meshtest.StartWith(tb, meshtest.Options{
		Validator: s.tenantValidator(tb),
		Token:     func(tb testing.TB, w string) string { return s.ClientToken(tb, w+"-service") },
		Server:    cfg.NATS,
	})
	_, usersJS := meshtest.Connect(tb, s.NATS, mesh.Users)
	if _, err := natsauth.NewRevocationStore(context.Background(), usersJS, 1); err != nil {
		tb.Fatalf("ttstest: revocation bucket: %v", err)
	}
	return s
}

// deployDir is the repository's deploy directory, wherever the test runs.
func deployDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy")
}

// StartTTS runs a Transaction Token Service on the stack; env adds or
// overrides its variables (TTS_KEYS_FILE to share keys between replicas).
// From then on the TTS alone answers the auth callout, as in production.
func (s *Stack) StartTTS(tb testing.TB, env map[string]string) *TTS {
	tb.Helper()
	t := Start(tb, Config{NATSURL: s.NATS.ClientURL(), Issuer: s.Issuer, JWKSURL: s.JWKSURL, Env: env})
	meshtest.StopCallout(s.NATS)
	return t
}

// tenantValidator verifies the tenant's access tokens for Audience.
func (s *Stack) tenantValidator(tb testing.TB) *authz.Validator {
	tb.Helper()
	return meshtest.Validator(tb, s.JWKSURL, s.Issuer, Audience)
}

// UserToken is an access token for Audience the tenant issues to the user
// with email, asking for scope.
func (s *Stack) UserToken(tb testing.TB, email, scope string) string {
	tb.Helper()
	tok, err := s.Tenant.IssueUserToken(email, Audience, scope)
	if err != nil {
		tb.Fatalf("ttstest: token for %s: %v", email, err)
	}
	return tok
}

// ClientToken is the M2M access token for Audience of clientID.
func (s *Stack) ClientToken(tb testing.TB, clientID string) string {
	tb.Helper()
	tok, err := s.Tenant.IssueClientToken(clientID, Audience)
	if err != nil {
		tb.Fatalf("ttstest: token for %s: %v", clientID, err)
	}
	return tok
}

// TxnClient exchanges tokens as the service of clientID does: over its
// NATS connection nc, with its own M2M token as the actor.
func (s *Stack) TxnClient(tb testing.TB, nc *nats.Conn, clientID string) *natsauth.TxnClient {
	tb.Helper()
	c, err := natsauth.NewTxnClient(natsauth.TxnClientConfig{Conn: nc, Actor: StaticToken(s.ClientToken(tb, clientID))})
	if err != nil {
		tb.Fatalf("ttstest: txn client: %v", err)
	}
	return c
}

// StaticToken is a token source that always answers the same token.
type StaticToken string

// Token returns the token.
func (s StaticToken) Token(context.Context) (string, error) { return string(s), nil }

// TxnValidator verifies transaction tokens signed with the keys at jwks
// (a TTS's JWKSURL), refetching them at once after a rotation.
func TxnValidator(tb testing.TB, jwks string) *authz.TxnValidator {
	tb.Helper()
	kp, err := authz.NewKeyProvider(authz.WithJWKSURL(jwks), authz.WithAlgorithm("ES256"), authz.WithRefetchCooldown(0))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := authz.NewTxnValidator(kp, authz.WithIssuers(authz.DefaultTxnIssuer), authz.WithAudiences(authz.DefaultTrustDomain))
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// RFC9068 is the token dialect of Auth0's RFC 9068 profile with
// permissions (typ at+jwt, client_id instead of azp, no gty), for
// StackConfig.TokenDialect.
const RFC9068 = "rfc9068_profile_authz"

// RequireRFC9068 fails the test unless tok's JOSE header says typ at+jwt,
// as the RFC 9068 profile's tokens do (Auth0's own say JWT): a test of that
// profile that got the other kind would prove nothing.
func RequireRFC9068(tb testing.TB, tok string) {
	tb.Helper()
	head, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		tb.Fatalf("ttstest: token header: %v", err)
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		tb.Fatalf("ttstest: token header: %v", err)
	}
	if h.Typ != "at+jwt" {
		tb.Fatalf("devtenant issued typ %q, want at+jwt", h.Typ)
	}
}
