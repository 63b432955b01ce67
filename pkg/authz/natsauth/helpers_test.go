package natsauth

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

// userSub is the sub of authztest's default user token.
const userSub = "auth0|6553da60a54af58e29493993"

// startNATS and connect are natstest's server and connection under the
// names this package's tests use.
var (
	startNATS = natstest.RunJetStream
	connect   = natstest.Connect
)

// startKeys returns a started KeyProvider, stopped when the test ends.
func startKeys(tb testing.TB, opts ...authz.KeyOption) *authz.KeyProvider {
	tb.Helper()
	keys, err := authz.NewKeyProvider(opts...)
	if err != nil {
		tb.Fatalf("key provider: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if err := keys.Start(ctx); err != nil {
		tb.Fatalf("keys: %v", err)
	}
	return keys
}

// newValidator returns a real authz.Validator of the tenant's access tokens,
// fed by the test issuer's JWKS: what the edge and the Transaction Token
// Service check, never a NATS receiver.
func newValidator(tb testing.TB, iss *authztest.Issuer, opts ...authz.Option) *authz.Validator {
	tb.Helper()
	keys := startKeys(tb, authz.WithJWKSURL(iss.JWKSURL()))
	all := append([]authz.Option{authz.WithIssuers(iss.Issuer()), authz.WithAudiences(authztest.Audience)}, opts...)
	v, err := authz.NewValidator(keys, all...)
	if err != nil {
		tb.Fatalf("validator: %v", err)
	}
	return v
}

// newTxnValidator returns what every NATS receiver uses: a TxnValidator fed
// by the test Transaction Token Service's JWKS. The key provider refetches
// on every unknown kid, so a key the service rotated in is picked up at once.
func newTxnValidator(tb testing.TB, tts *authztest.TxnIssuer, opts ...authz.Option) *authz.TxnValidator {
	tb.Helper()
	keys := startKeys(tb, authz.WithJWKSURL(tts.JWKSURL()), authz.WithAlgorithm("ES256"), authz.WithRefetchCooldown(0))
	all := append([]authz.Option{authz.WithIssuers(tts.Issuer), authz.WithAudiences(tts.TrustDomain)}, opts...)
	v, err := authz.NewTxnValidator(keys, all...)
	if err != nil {
		tb.Fatalf("txn validator: %v", err)
	}
	return v
}

// testMesh is the identity side of a test: the tenant that issues access
// tokens, the Transaction Token Service (its keys and an in-process
// exchanger) and the transaction token validator every receiver uses.
type testMesh struct {
	tenant *authztest.Issuer
	access *authz.Validator
	tts    *authztest.TxnIssuer
	txn    *authz.TxnValidator
	ex     *testExchanger
}

func newMesh(tb testing.TB, txnOpts ...authz.Option) *testMesh {
	tb.Helper()
	m := &testMesh{tenant: authztest.NewIssuer(tb), tts: authztest.NewTxnIssuer(tb)}
	m.access = newValidator(tb, m.tenant)
	m.txn = newTxnValidator(tb, m.tts, txnOpts...)
	m.ex = newTestExchanger(tb, m.access, m.tts, "orders-service")
	return m
}

// newMeshOnNATS returns a mesh and a connection to a fresh in-process
// server, what most tests of a service or a client start from.
func newMeshOnNATS(tb testing.TB) (*testMesh, *nats.Conn) {
	tb.Helper()
	m := newMesh(tb)
	nc, _ := connect(tb, startNATS(tb))
	return m, nc
}

// userTxn mints a transaction token for the default user with scope.
func (m *testMesh) userTxn(tb testing.TB, scope string, over authztest.Claims) string {
	tb.Helper()
	return m.tts.Token(tb, userSub, scope, over)
}

// serviceTxn mints the transaction token of work client started on its own
// (sub "<client>@clients", req_wl client).
func (m *testMesh) serviceTxn(tb testing.TB, client, scope string) string {
	tb.Helper()
	return m.tts.Token(tb, client+"@clients", scope, authztest.Claims{"req_wl": client})
}

// m2mToken returns a client-credentials access token of the tenant for
// client; each call's token differs (RS256 signatures are deterministic).
func (m *testMesh) m2mToken(tb testing.TB, client, scope string) string {
	tb.Helper()
	return m.tenant.Token(tb, authztest.Claims{
		"sub": client + "@clients", "azp": client, "gty": "client-credentials", "scope": scope,
		"aud": authztest.Audience, "permissions": nil, "https://authmesh.dev/roles": nil, "jti": newUUID(),
	})
}

// exchangeCall is one exchange the test service performed (not served from
// its cache).
type exchangeCall struct {
	subjectToken string
	scopes       []string
	event        *authz.EventBinding
}

// testExchanger plays the Transaction Token Service in-process. It verifies
// the subject token against the tenant with a real authz.Validator, grants
// the requested scopes the token holds (a user's permissions, an M2M token's
// scope; insufficient_scope when it holds none) and mints with a TxnIssuer:
// sub = the subject token's sub, req_wl = the configured workload. Like
// TxnClient it caches per (subject token, scope set), so Forget matters;
// uncached turns that off (for playing the service behind a TxnClient, which
// caches itself).
type testExchanger struct {
	tb       testing.TB
	access   *authz.Validator
	workload string

	mu        sync.Mutex
	minter    *authztest.TxnIssuer
	cache     map[string]string
	exchanges []exchangeCall
	forgotten []string
}

func newTestExchanger(tb testing.TB, access *authz.Validator, tts *authztest.TxnIssuer, workload string) *testExchanger {
	return &testExchanger{tb: tb, access: access, workload: workload, minter: tts, cache: map[string]string{}}
}

// Exchange implements Exchanger.
func (e *testExchanger) Exchange(ctx context.Context, subjectToken string, scopes []string) (string, error) {
	scopes = slices.Sorted(slices.Values(scopes))
	key := subjectToken + " " + strings.Join(scopes, " ")
	e.mu.Lock()
	defer e.mu.Unlock()
	if tok, ok := e.cache[key]; ok {
		return tok, nil
	}
	c, granted, err := e.grant(ctx, subjectToken, scopes)
	if err != nil {
		return "", err
	}
	tok := e.minter.Token(e.tb, c.Subject, strings.Join(granted, " "), authztest.Claims{"req_wl": e.workload})
	if e.cache != nil {
		e.cache[key] = tok
	}
	e.exchanges = append(e.exchanges, exchangeCall{subjectToken: subjectToken, scopes: scopes})
	return tok, nil
}

// grant verifies subjectToken and returns the scopes of scopes it holds.
func (e *testExchanger) grant(ctx context.Context, subjectToken string, scopes []string) (*authz.Claims, []string, error) {
	c, err := e.access.Validate(ctx, subjectToken)
	if err != nil {
		return nil, nil, err
	}
	held := c.Permissions
	if c.IsM2M() {
		held = c.Scopes.List()
	}
	var granted []string
	for _, s := range scopes {
		if slices.Contains(held, s) {
			granted = append(granted, s)
		}
	}
	if len(granted) == 0 {
		return nil, nil, &authz.Error{Code: authz.CodeInsufficientScope, Reason: "missing_permission",
			Description: "the subject token holds none of the requested scopes", Needed: scopes}
	}
	return c, granted, nil
}

// ExchangeEvent implements Exchanger: as the service does, a token bound to
// ev that lives an hour.
func (e *testExchanger) ExchangeEvent(ctx context.Context, subjectToken string, scopes []string, ev authz.EventBinding) (string, time.Time, error) {
	c, granted, err := e.grant(ctx, subjectToken, scopes)
	if err != nil {
		return "", time.Time{}, err
	}
	exp := time.Now().Add(time.Hour)
	tok := e.minter.Token(e.tb, c.Subject, strings.Join(granted, " "), authztest.Claims{"req_wl": e.workload,
		"exp": exp.Unix(), "tctx": authz.TxnContext{AZP: c.Client(), Event: &ev}})
	e.mu.Lock()
	e.exchanges = append(e.exchanges, exchangeCall{subjectToken: subjectToken, scopes: scopes, event: &ev})
	e.mu.Unlock()
	return tok, exp.Truncate(time.Second), nil
}

// Forget implements what Request calls to drop the transaction tokens
// exchanged for a refused service token.
func (e *testExchanger) Forget(subjectToken string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forgotten = append(e.forgotten, subjectToken)
	for k := range e.cache {
		if strings.HasPrefix(k, subjectToken+" ") {
			delete(e.cache, k)
		}
	}
}

func (e *testExchanger) uncached() *testExchanger {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cache = nil
	return e
}

// mintWith makes tts sign the tokens minted from now on (a foreign service
// whose keys no receiver trusts, say).
func (e *testExchanger) mintWith(tts *authztest.TxnIssuer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.minter = tts
}

// calls returns the exchanges performed so far, in order.
func (e *testExchanger) calls() []exchangeCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.exchanges)
}

func (e *testExchanger) forgottenTokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.forgotten)
}

// hops returns an Outbound.Scopes answering from table; any other subject
// gets nothing (and so no token).
func hops(table map[string][]string) func(string) []string {
	return func(subject string) []string { return table[subject] }
}

// anySubject returns an Outbound.Scopes that gives every subject scopes.
func anySubject(scopes ...string) func(string) []string {
	return func(string) []string { return scopes }
}

// userCtx is what an HTTP handler gets: the edge middleware's claims plus
// the caller's access token, and the service's base context's Outbound
// (pkg/platform's), so outgoing messages get exchanged transaction tokens.
func userCtx(tb testing.TB, v *authz.Validator, ex Exchanger, tok string, scopes func(string) []string) context.Context {
	tb.Helper()
	return userCtxFrom(context.Background(), tb, v, ex, tok, scopes)
}

// userCtxFrom is userCtx under parent (its trace, say).
func userCtxFrom(parent context.Context, tb testing.TB, v *authz.Validator, ex Exchanger, tok string, scopes func(string) []string) context.Context {
	tb.Helper()
	claims, err := v.Validate(context.Background(), tok)
	if err != nil {
		tb.Fatalf("validate test token: %v", err)
	}
	ctx := WithOutbound(parent, &Outbound{Exchanger: ex, Scopes: scopes})
	return authz.WithClaims(ctx, claims, tok)
}

// txnCtx is what a NATS handler or consumer gets: the verified claims of the
// transaction token that came with the message, and that token.
func txnCtx(tb testing.TB, v Verifier, tok string) context.Context {
	tb.Helper()
	claims, err := v.Validate(context.Background(), tok)
	if err != nil {
		tb.Fatalf("validate test transaction token: %v", err)
	}
	return authz.WithClaims(context.Background(), claims, tok)
}

// header builds a nats.Header from name, value pairs (a name may repeat).
func header(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// rotatingSource hands out tokens in order and records invalidations.
type rotatingSource struct {
	mu          sync.Mutex
	toks        []string
	invalidated []string
}

func (s *rotatingSource) Token(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.toks[0], nil
}

func (s *rotatingSource) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated = append(s.invalidated, tok)
	if len(s.toks) > 1 && s.toks[0] == tok {
		s.toks = s.toks[1:]
	}
}

func (s *rotatingSource) invalidations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.invalidated)
}

// newTestService returns a Service named name on nc that verifies with v,
// stopped when the test ends.
func newTestService(tb testing.TB, nc *nats.Conn, name string, v Verifier, opts ...ServiceOption) *Service {
	tb.Helper()
	svc, err := NewService(nc, micro.Config{Name: name, Version: "1.0.0"}, v, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = svc.Stop() })
	return svc
}

// newRevocationStore returns a RevocationStore on js with one replica, the
// bucket created.
// revocations is a revocation store on a JetStream server of its own, and
// that JetStream (for watchers and direct writes to the bucket).
func revocations(tb testing.TB) (jetstream.JetStream, *RevocationStore) {
	tb.Helper()
	js := natstest.JetStream(tb)
	return js, newRevocationStore(tb, js)
}

func newRevocationStore(tb testing.TB, js jetstream.JetStream) *RevocationStore {
	tb.Helper()
	store, err := NewRevocationStore(context.Background(), js, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return store
}
