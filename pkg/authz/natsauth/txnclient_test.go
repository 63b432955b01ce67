package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// ttsStub is the Transaction Token Service on NATS, in-process: a micro
// endpoint that records each request and answers it through an Exchanger
// (a testExchanger: the subject token checked against the tenant, scopes
// narrowed, a token minted), mapping its refusals to micro errors.
type ttsStub struct {
	requests atomic.Int32

	subject   string
	hold      chan struct{} // when set, every request waits until it is closed
	expiresIn int64
	// answer, when set, answers instead of the exchanger.
	answer func(req micro.Request)

	mu      sync.Mutex
	bodies  [][]byte
	headers []nats.Header
}

func startTTS(tb testing.TB, nc *nats.Conn, ex Exchanger, opts ...func(*ttsStub)) *ttsStub {
	tb.Helper()
	s := &ttsStub{subject: DefaultTxnSubject, expiresIn: 300}
	for _, o := range opts {
		o(s)
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "tts", Version: "1.0.0"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint("exchange", micro.HandlerFunc(func(req micro.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		s.bodies = append(s.bodies, slices.Clone(req.Data()))
		s.headers = append(s.headers, nats.Header(req.Headers()))
		s.mu.Unlock()
		if s.hold != nil {
			<-s.hold
		}
		if s.answer != nil {
			s.answer(req)
			return
		}
		var r TxnRequest
		if err := json.Unmarshal(req.Data(), &r); err != nil {
			_ = req.Error("400", "invalid_request: not JSON", nil)
			return
		}
		tok, err := ex.Exchange(context.Background(), r.SubjectToken, strings.Fields(r.Scope))
		if err != nil {
			var e *authz.Error
			errors.As(err, &e)
			switch authz.CodeOf(err) {
			case authz.CodeInvalidToken:
				_ = req.Error("401", "invalid_token: "+e.Description, nil)
			case authz.CodeInsufficientScope:
				_ = req.Error("403", "insufficient_scope: "+e.Description, nil)
			default:
				_ = req.Error("500", "internal error", nil)
			}
			return
		}
		_ = req.RespondJSON(TxnResponse{AccessToken: tok, IssuedTokenType: authz.TokenTypeTxn, TokenType: "N_A", ExpiresIn: s.expiresIn})
	}), micro.WithEndpointSubject(s.subject)); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *ttsStub) body(tb testing.TB, i int) map[string]any {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(s.bodies[i], &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

func newTxnClient(tb testing.TB, nc *nats.Conn, mut func(*TxnClientConfig)) *TxnClient {
	tb.Helper()
	cfg := TxnClientConfig{Conn: nc, Actor: staticToken("actor.m2m.token")}
	if mut != nil {
		mut(&cfg)
	}
	c, err := NewTxnClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestTxnClientRequest: the exchange request carries RFC 8693's fields (and
// the request id and trace of the caller), and the answer is a transaction
// token of the caller narrowed to what it holds.
func TestTxnClientRequest(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	stub := startTTS(t, nc, m.ex)
	c := newTxnClient(t, nc, nil)
	access := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}})
	ctx := WithRequestID(context.Background(), "req-7")
	ctx = withTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")

	tok, err := c.Exchange(ctx, access, []string{"read:profile", "cancel:orders", "create:orders"})
	if err != nil {
		t.Fatal(err)
	}
	body := stub.body(t, 0)
	for k, want := range map[string]string{
		"grant_type":           "urn:ietf:params:oauth:grant-type:token-exchange",
		"requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
		"audience":             authz.DefaultTrustDomain,
		"scope":                "cancel:orders create:orders read:profile",
		"subject_token":        access,
		"subject_token_type":   "urn:ietf:params:oauth:token-type:access_token",
		"actor_token":          "actor.m2m.token",
		"actor_token_type":     "urn:ietf:params:oauth:token-type:access_token",
	} {
		if got, _ := body[k].(string); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	stub.mu.Lock()
	h := stub.headers[0]
	stub.mu.Unlock()
	if h.Get(HeaderRequestID) != "req-7" || !strings.Contains(h.Get(HeaderTraceparent), "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("headers %v", h)
	}
	if _, ok := h[HeaderAuthorization]; ok {
		t.Error("the exchange request carries an Authorization header")
	}
	claims, err := m.txn.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != userSub || !slices.Equal(claims.Permissions, []string{"create:orders", "read:profile"}) ||
		claims.RequestingWorkload != "orders-service" {
		t.Fatalf("claims %+v", claims)
	}
}

// TestTxnClientCache: concurrent exchanges of one key share one request; the
// result is cached per (subject token, scope set); a token about to expire
// is exchanged again.
func TestTxnClientCache(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	release := make(chan struct{})
	stub := startTTS(t, nc, m.ex, func(s *ttsStub) { s.hold = release })
	c := newTxnClient(t, nc, nil)
	ctx := context.Background()
	access := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}})
	scopes := []string{"read:profile", "create:orders"}

	const callers = 100
	var ready, done sync.WaitGroup
	ready.Add(callers)
	toks := make(chan string, callers)
	errs := make(chan error, callers)
	for range callers {
		done.Go(func() {
			ready.Done()
			tok, err := c.Exchange(ctx, access, scopes)
			if err != nil {
				errs <- err
			}
			toks <- tok
		})
	}
	ready.Wait()
	authztest.Eventually(t, 5*time.Second, func() bool { return stub.requests.Load() >= 1 }, "the exchange reached the service")
	time.Sleep(100 * time.Millisecond) // every caller joins the flight in flight
	close(release)
	done.Wait()
	close(errs)
	close(toks)
	for err := range errs {
		t.Fatal(err)
	}
	first := <-toks
	for tok := range toks {
		if tok != first {
			t.Fatal("concurrent callers got different tokens")
		}
	}
	if n := stub.requests.Load(); n != 1 {
		t.Fatalf("%d exchanges for %d concurrent callers, want 1", n, callers)
	}

	steps := []struct {
		name      string
		tok       string
		scopes    []string
		wantTotal int32
	}{
		{"same key: cached", access, scopes, 1},
		{"same scopes in another order: cached", access, []string{"create:orders", "read:profile"}, 1},
		{"another scope set: exchanged", access, []string{"read:profile"}, 2},
		{"another token: exchanged", m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "jti": "2"}), []string{"read:profile"}, 3},
		{"the other scope set: cached", access, []string{"read:profile"}, 3},
	}
	for _, s := range steps {
		tok, err := c.Exchange(ctx, s.tok, s.scopes)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n := stub.requests.Load(); n != s.wantTotal {
			t.Fatalf("%s: %d exchanges in all, want %d", s.name, n, s.wantTotal)
		}
		if s.wantTotal == 1 && tok != first {
			t.Fatalf("%s: another token", s.name)
		}
	}
}

func TestTxnClientRenewsBeforeExpiry(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	ctx := context.Background()
	access := m.tenant.Token(t, nil)
	scopes := []string{"read:profile"}

	t.Run("Margin before expires_in", func(t *testing.T) {
		t.Parallel()
		stub := startTTS(t, nc, m.ex, func(s *ttsStub) { s.subject = "tts.renew"; s.expiresIn = 300 })
		c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Subject = "tts.renew"; cfg.Margin = time.Minute })
		clock := &fakeClock{t: time.Now()}
		c.now = clock.now
		for i, s := range []struct {
			advance time.Duration
			want    int32
		}{
			{0, 1},
			{239 * time.Second, 1}, // 61 s left: cached
			{2 * time.Second, 2},   // 59 s left: within the margin, exchanged
			{time.Second, 2},
		} {
			clock.add(s.advance)
			if _, err := c.Exchange(ctx, access, scopes); err != nil {
				t.Fatal(err)
			}
			if n := stub.requests.Load(); n != s.want {
				t.Fatalf("step %d: %d exchanges, want %d", i, n, s.want)
			}
		}
	})
	t.Run("expires_in shorter than Margin", func(t *testing.T) {
		t.Parallel()
		stub := startTTS(t, nc, m.ex, func(s *ttsStub) { s.subject = "tts.short"; s.expiresIn = 30 })
		c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Subject = "tts.short" })
		for range 3 {
			if _, err := c.Exchange(ctx, access, scopes); err != nil {
				t.Fatal(err)
			}
		}
		if n := stub.requests.Load(); n != 3 {
			t.Fatalf("%d exchanges, want 3: a token that would expire within Margin is never served", n)
		}
	})
}

// TestTxnClientErrors: no answer is "unavailable" (503 + Retry-After at the
// edge); the service's refusals keep their authz code; anything that is not
// a token is an error; no failure is cached.
func TestTxnClientErrors(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	ctx := context.Background()
	access := m.tenant.Token(t, nil)
	silent, err := nc.Subscribe("tts.silent", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Unsubscribe() })
	answer := func(subject string, f func(micro.Request)) string {
		startTTS(t, nc, m.ex, func(s *ttsStub) { s.subject, s.answer = subject, f })
		return subject
	}
	unavailable := func(t *testing.T, err error) {
		t.Helper()
		var e *authz.Error
		if authz.CodeOf(err) != authz.CodeKeysUnavailable || !errors.Is(err, ErrTxnUnavailable) ||
			!errors.As(err, &e) || e.Reason != ErrTxnUnavailable.Reason {
			t.Fatalf("%v: want the token service unavailable", err)
		}
	}
	cases := []struct {
		name     string
		subject  string
		token    string
		scopes   []string
		check    func(*testing.T, error)
		maxTaken time.Duration
	}{
		{"no responder", "tts.nobody", access, []string{"read:profile"}, unavailable, time.Second},
		{"timeout", "tts.silent", access, []string{"read:profile"}, unavailable, 2 * time.Second},
		{"service error", answer("tts.500", func(r micro.Request) { _ = r.Error("500", "internal error", nil) }), access, []string{"read:profile"}, unavailable, time.Second},
		{"subject token refused", DefaultTxnSubject, "not.a.token", []string{"read:profile"}, func(t *testing.T, err error) {
			var se *ServiceError
			if authz.CodeOf(err) != authz.CodeInvalidToken || !errors.As(err, &se) || se.Code != 401 {
				t.Fatalf("%v: want a 401 invalid_token", err)
			}
		}, time.Second},
		{"scope refused", DefaultTxnSubject, access, []string{"admin:users"}, func(t *testing.T, err error) {
			var se *ServiceError
			if !errors.Is(err, authz.ErrInsufficientScope) || !errors.As(err, &se) || se.Code != 403 {
				t.Fatalf("%v: want a 403 insufficient_scope", err)
			}
		}, time.Second},
		{"garbage reply", answer("tts.garbage", func(r micro.Request) { _ = r.Respond([]byte("<html>")) }), access, []string{"read:profile"}, notAToken, time.Second},
		{"reply without a token", answer("tts.empty", func(r micro.Request) { _ = r.Respond([]byte(`{"expires_in":300}`)) }), access, []string{"read:profile"}, notAToken, time.Second},
		{"reply without a lifetime", answer("tts.noexp", func(r micro.Request) { _ = r.Respond([]byte(`{"access_token":"a.b.c"}`)) }), access, []string{"read:profile"}, notAToken, time.Second},
	}
	startTTS(t, nc, m.ex) // DefaultTxnSubject
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Subject, cfg.Timeout = tc.subject, 200*time.Millisecond })
			start := time.Now()
			tok, err := c.Exchange(ctx, tc.token, tc.scopes)
			if err == nil || tok != "" {
				t.Fatalf("%q, %v: want an error", tok, err)
			}
			if taken := time.Since(start); taken > tc.maxTaken {
				t.Errorf("took %v", taken)
			}
			tc.check(t, err)
			if strings.Contains(err.Error(), tc.token) || strings.Contains(err.Error(), "actor.m2m.token") {
				t.Fatal("the error quotes a token")
			}
			c.mu.Lock()
			n := len(c.cache)
			c.mu.Unlock()
			if n != 0 {
				t.Fatal("a failure was cached")
			}
		})
	}

	t.Run("the actor's token cannot be had", func(t *testing.T) {
		t.Parallel()
		stub := startTTS(t, nc, m.ex, func(s *ttsStub) { s.subject = "tts.actor" })
		c := newTxnClient(t, nc, func(cfg *TxnClientConfig) {
			cfg.Subject, cfg.Actor = "tts.actor", failingSource{errors.New("tenant down")}
		})
		if _, err := c.Exchange(ctx, access, []string{"read:profile"}); err == nil || !strings.Contains(err.Error(), "tenant down") {
			t.Fatalf("%v", err)
		}
		if stub.requests.Load() != 0 {
			t.Fatal("exchanged without an actor token")
		}
	})

	t.Run("the service is overloaded", func(t *testing.T) {
		t.Parallel()
		sub, err := nc.Subscribe("tts.busy", func(m *nats.Msg) {
			r := nats.NewMsg(m.Reply)
			r.Header.Set(micro.ErrorCodeHeader, "503")
			r.Header.Set(micro.ErrorHeader, "temporarily_unavailable: too many DPoP proofs in flight, retry later")
			_ = m.RespondMsg(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Subject = "tts.busy" })
		_, err = c.Exchange(ctx, access, []string{"read:profile"})
		var e *authz.Error
		if !errors.Is(err, ErrTxnUnavailable) || !errors.As(err, &e) || e.Reason != ErrTxnUnavailable.Reason {
			t.Fatalf("an overloaded service: %v, want %s", err, ErrTxnUnavailable.Reason)
		}
	})

	t.Run("back after being away", func(t *testing.T) {
		t.Parallel()
		c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Subject = "tts.later" })
		if _, err := c.Exchange(ctx, access, []string{"read:profile"}); !errors.Is(err, ErrTxnUnavailable) {
			t.Fatalf("%v", err)
		}
		startTTS(t, nc, m.ex, func(s *ttsStub) { s.subject = "tts.later" })
		if _, err := c.Exchange(ctx, access, []string{"read:profile"}); err != nil {
			t.Fatalf("after the service came back: %v", err)
		}
	})
}

func notAToken(t *testing.T, err error) {
	t.Helper()
	if code := authz.CodeOf(err); code != "" {
		t.Fatalf("%v: code %q, want a plain error", err, code)
	}
}

type failingSource struct{ err error }

func (f failingSource) Token(context.Context) (string, error) { return "", f.err }

// TestTxnClientForget drops every scope set of one subject token, and only
// those.
func TestTxnClientForget(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	stub := startTTS(t, nc, m.ex.uncached())
	c := newTxnClient(t, nc, nil)
	ctx := context.Background()
	a := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}, "jti": "a"})
	b := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}, "jti": "b"})
	keys := []struct {
		tok    string
		scopes []string
	}{{a, []string{"read:profile"}}, {a, []string{"create:orders"}}, {b, []string{"read:profile"}}}
	exchangeAll := func() {
		t.Helper()
		for _, k := range keys {
			if _, err := c.Exchange(ctx, k.tok, k.scopes); err != nil {
				t.Fatal(err)
			}
		}
	}
	exchangeAll()
	if n := stub.requests.Load(); n != 3 {
		t.Fatalf("%d exchanges, want 3", n)
	}
	c.Forget(a)
	exchangeAll()
	if n := stub.requests.Load(); n != 5 {
		t.Fatalf("%d exchanges after forgetting a, want 5 (a's two again, b's cached)", n)
	}
	c.Forget("never.exchanged.token")
	exchangeAll()
	if n := stub.requests.Load(); n != 5 {
		t.Fatalf("forgetting an unknown token dropped %d entries", n-5)
	}
}

// TestRequestRenewsThroughTxnClient: with the real client, a transaction
// token the receiver refuses is dropped from the TxnClient's cache (Forget)
// along with the M2M token, and the retry gets a new one.
func TestRequestRenewsThroughTxnClient(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	service := newTestExchanger(t, m.access, m.tts, "orders-service").uncached()
	stub := startTTS(t, nc, service)
	c := newTxnClient(t, nc, nil)
	svc := newTestService(t, nc, "users", m.txn)
	if err := svc.AddEndpoint("profile", "t.profile", authz.RequireAll("read:users").Clients("orders-service"),
		func(ctx context.Context, req micro.Request) { _ = req.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m2m := m.m2mToken(t, "orders-service", "read:users")
	// Cached while the service signed with a key since retired.
	service.mintWith(authztest.NewTxnIssuer(t))
	if _, err := c.Exchange(ctx, m2m, []string{"read:users"}); err != nil {
		t.Fatal(err)
	}
	service.mintWith(m.tts)

	src := &rotatingSource{toks: []string{m2m}}
	out := WithOutbound(ctx, &Outbound{Exchanger: c, Scopes: anySubject("read:users")})
	reply, err := Request(AsService(out, src), nc, "t.profile", nil)
	if err != nil || string(reply.Data) != "ok" {
		t.Fatalf("renewed request: %v", err)
	}
	if n := stub.requests.Load(); n != 2 || len(src.invalidations()) != 1 {
		t.Fatalf("%d exchanges, %d invalidations; want 2 and 1", n, len(src.invalidations()))
	}
}

func TestNewTxnClientValidates(t *testing.T) {
	t.Parallel()
	nc, _ := connect(t, startNATS(t))
	for name, cfg := range map[string]TxnClientConfig{
		"no connection": {Actor: staticToken("a")},
		"no actor":      {Conn: nc},
	} {
		if _, err := NewTxnClient(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := NewTxnClient(TxnClientConfig{Conn: nc, Actor: staticToken("a")})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Subject != DefaultTxnSubject || c.cfg.TrustDomain != authz.DefaultTrustDomain ||
		c.cfg.Timeout != 2*time.Second || c.cfg.Margin != time.Minute || c.cfg.CacheSize != 10000 {
		t.Fatalf("defaults %+v", c.cfg)
	}
}

// TestTxnClientCacheBounded: the cache never holds more than CacheSize
// tokens.
func TestTxnClientCacheBounded(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	startTTS(t, nc, m.ex)
	c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.CacheSize = 2 })
	access := m.tenant.Token(t, authztest.Claims{"permissions": []string{"a", "b", "c", "d"}})
	for _, s := range []string{"a", "b", "c", "d"} {
		if _, err := c.Exchange(context.Background(), access, []string{s}); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		n := len(c.cache)
		c.mu.Unlock()
		if n > 2 {
			t.Fatalf("%d cached tokens, CacheSize 2", n)
		}
	}
}

// TestTxnClientRenewsRefusedActor: when the service refuses the requesting
// service's own token (invalid_client), the client drops that token, asks
// again once with a new one, and reports "unavailable" (never the caller's
// fault) if the new one is refused too.
func TestTxnClientRenewsRefusedActor(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	user := m.tenant.Token(t, nil)
	stub := startTTS(t, nc, m.ex, func(s *ttsStub) {
		s.answer = func(req micro.Request) {
			var r TxnRequest
			_ = json.Unmarshal(req.Data(), &r)
			if r.ActorToken == "dead.actor.token" || r.ActorToken == "also.dead.token" {
				_ = req.Error("401", "invalid_client: the actor token is not valid", nil)
				return
			}
			tok, err := m.ex.Exchange(context.Background(), r.SubjectToken, strings.Fields(r.Scope))
			if err != nil {
				_ = req.Error("500", "internal error", nil)
				return
			}
			_ = req.RespondJSON(TxnResponse{AccessToken: tok, IssuedTokenType: authz.TokenTypeTxn, TokenType: "N_A", ExpiresIn: 300})
		}
	})
	actor := &rotatingSource{toks: []string{"dead.actor.token", "fresh.actor.token"}}
	c := newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Actor = actor })
	if _, err := c.Exchange(context.Background(), user, []string{"read:profile"}); err != nil {
		t.Fatalf("after renewing the refused actor token: %v", err)
	}
	if got := actor.invalidations(); !slices.Equal(got, []string{"dead.actor.token"}) || stub.requests.Load() != 2 {
		t.Fatalf("invalidated %v after %d requests, want the dead token once and 2 requests", got, stub.requests.Load())
	}

	stuck := &rotatingSource{toks: []string{"also.dead.token", "dead.actor.token"}}
	c = newTxnClient(t, nc, func(cfg *TxnClientConfig) { cfg.Actor = stuck })
	_, err := c.Exchange(context.Background(), user, []string{"read:profile"})
	var ae *authz.Error
	if authz.CodeOf(err) != authz.CodeKeysUnavailable || !errors.As(err, &ae) || ae.Reason != "actor_refused" {
		t.Fatalf("both actor tokens refused: %v, want keys_unavailable/actor_refused", err)
	}
}
