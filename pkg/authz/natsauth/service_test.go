package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

type seen struct {
	Sub, RequestID, Traceparent, Downstream string
	Txn, ReqWL                              string
	Token, DownstreamToken                  string // the Txn-Token each hop received
	Authorization                           bool   // some hop got an Authorization header
}

// TestRequestPropagation: an HTTP caller's access token is exchanged once for
// a transaction token; that token, the request id and the trace travel
// through two hops of micro endpoints, each validating with its own policy,
// and the second hop receives the very token the first one did (forwarded
// unmodified, no second exchange), never the access token.
func TestRequestPropagation(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)

	back := newTestService(t, nc, "users", m.txn)
	if err := back.AddEndpoint("profile", "authmesh.users.profile", authz.RequireAll("read:profile").Users(),
		func(ctx context.Context, req micro.Request) {
			c, _ := authz.ClaimsFromContext(ctx)
			id, _ := RequestIDFromContext(ctx)
			h := nats.Header(req.Headers())
			_ = req.RespondJSON(seen{Sub: c.Subject, RequestID: id, Traceparent: TraceCarrier(ctx).Traceparent, Txn: c.Txn,
				ReqWL: c.RequestingWorkload, Token: h.Get(HeaderTxnToken), Authorization: h.Get(HeaderAuthorization) != ""})
		}); err != nil {
		t.Fatal(err)
	}
	// The front service's base context has an Outbound, as pkg/platform
	// sets up every service: a handler still forwards what it received.
	base := WithOutbound(context.Background(), &Outbound{Exchanger: m.ex, Scopes: anySubject("read:profile")})
	front := newTestService(t, nc, "orders", m.txn, WithContext(base))
	if err := front.AddEndpoint("summary", "authmesh.orders.summary", authz.Authenticated().Users(),
		func(ctx context.Context, req micro.Request) {
			// The handler's ctx carries the caller's transaction onward.
			reply, err := Request(ctx, nc, "authmesh.users.profile", nil)
			if err != nil {
				_ = req.Error("500", err.Error(), nil)
				return
			}
			var s seen
			_ = json.Unmarshal(reply.Data, &s)
			s.Downstream, s.DownstreamToken = s.Traceparent, s.Token
			h := nats.Header(req.Headers())
			s.Traceparent, s.Token = TraceCarrier(ctx).Traceparent, h.Get(HeaderTxnToken)
			s.Authorization = s.Authorization || h.Get(HeaderAuthorization) != ""
			if c, _ := authz.ClaimsFromContext(ctx); c.Txn != s.Txn {
				s.Txn = "changed"
			}
			_ = req.RespondJSON(s)
		}); err != nil {
		t.Fatal(err)
	}

	access := m.tenant.Token(t, nil)
	incoming := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := userCtx(t, m.access, m.ex, access, hops(map[string][]string{"authmesh.orders.summary": {"read:profile"}}))
	ctx = WithRequestID(ctx, "req-123")
	ctx = withTraceparent(ctx, incoming, "vendor=1")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	reply, err := Request(ctx, nc, "authmesh.orders.summary", nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	var got seen
	if err := json.Unmarshal(reply.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Sub != userSub || got.RequestID != "req-123" {
		t.Fatalf("downstream saw sub %q request id %q", got.Sub, got.RequestID)
	}
	traceID := incoming[3:35]
	for _, tp := range []string{got.Traceparent, got.Downstream} {
		if len(tp) != 55 || tp[3:35] != traceID || tp == incoming {
			t.Fatalf("traceparent %q: want trace id %s with a new parent id", tp, traceID)
		}
	}
	if got.Traceparent == got.Downstream {
		t.Fatal("each hop must get its own parent id")
	}
	if got.Token == "" || got.Token != got.DownstreamToken {
		t.Fatal("the second hop did not receive the transaction token the first one received")
	}
	if got.Token == access || strings.Contains(got.Token, access) || got.Authorization {
		t.Fatal("the access token crossed NATS")
	}
	if got.Txn == "" || got.Txn == "changed" || got.ReqWL != "orders-service" {
		t.Fatalf("txn %q, req_wl %q", got.Txn, got.ReqWL)
	}
	calls := m.ex.calls()
	if len(calls) != 1 || calls[0].subjectToken != access || !slices.Equal(calls[0].scopes, []string{"read:profile"}) {
		t.Fatalf("exchanges %+v, want one of the access token for [read:profile]", calls)
	}
}

// TestEndpointPolicy: every authorization outcome maps to the right micro
// error code (the forged and misdirected tokens are TestServiceRefusesTxnAttacks's), authz.CodeOf recovers the code, the token is never echoed, and
// each decision is counted with its reason.
func TestEndpointPolicy(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	svc := newTestService(t, nc, "users", m.txn, WithMetrics(metrics))
	ok := func(ctx context.Context, req micro.Request) { _ = req.Respond([]byte("ok")) }
	for _, ep := range []struct {
		name string
		p    authz.Policy
	}{
		{"profile", authz.RequireAll("read:profile").Users()},
		{"admin", authz.RequireAll("admin:users").Users()},
		{"cancel", authz.RequireAll("cancel:orders").Clients("users-service")},
		{"health", authz.Public()},
	} {
		if err := svc.AddEndpoint(ep.name, "t."+ep.name, ep.p, ok); err != nil {
			t.Fatal(err)
		}
	}

	user := m.userTxn(t, "read:profile", nil)
	accessTok := m.tenant.Token(t, nil)
	const denied = "never access tokens"
	cases := []struct {
		name, subj string
		hdr        nats.Header
		wantStatus int
		wantCode   authz.Code
		wantIn     string // in the error description
	}{
		{"user with permission", "t.profile", header(HeaderTxnToken, user), 0, "", ""},
		{"missing token", "t.profile", nil, 401, authz.CodeMissingToken, ""},
		{"empty Txn-Token", "t.profile", header(HeaderTxnToken, ""), 401, authz.CodeMissingToken, ""},
		{"Bearer scheme in Txn-Token", "t.profile", header(HeaderTxnToken, "Bearer "+user), 401, authz.CodeInvalidToken, "exactly one token"},
		{"two Txn-Token values", "t.profile", header(HeaderTxnToken, user, HeaderTxnToken, user), 401, authz.CodeInvalidToken, "exactly one token"},
		{"access token in Authorization", "t.profile", header(HeaderAuthorization, "Bearer "+accessTok), 401, authz.CodeInvalidToken, denied},
		{"access token beside a valid Txn-Token", "t.profile", header(HeaderTxnToken, user, HeaderAuthorization, "Bearer "+accessTok), 401, authz.CodeInvalidToken, denied},
		{"txn token in Authorization", "t.profile", header(HeaderAuthorization, "Bearer "+user), 401, authz.CodeInvalidToken, denied},
		{"missing permission", "t.admin", header(HeaderTxnToken, user), 403, authz.CodeInsufficientScope, ""},
		{"token bound to an event", "t.profile", header(HeaderTxnToken, m.userTxn(t, "read:profile", bound("orders.events.created", []byte(`{}`)))), 401, authz.CodeInvalidToken, "bound to an event"},
		{"m2m allowed client", "t.cancel", header(HeaderTxnToken, m.serviceTxn(t, "users-service", "cancel:orders")), 0, "", ""},
		{"m2m other client", "t.cancel", header(HeaderTxnToken, m.serviceTxn(t, "billing-service", "cancel:orders")), 403, authz.CodeInsufficientScope, ""},
		{"m2m allowed client, scope narrowed away", "t.cancel", header(HeaderTxnToken, m.serviceTxn(t, "users-service", "read:profile")), 403, authz.CodeInsufficientScope, ""},
		{"user on m2m endpoint", "t.cancel", header(HeaderTxnToken, m.userTxn(t, "cancel:orders", nil)), 403, authz.CodeInsufficientScope, ""},
		{"m2m on users-only endpoint", "t.profile", header(HeaderTxnToken, m.serviceTxn(t, "users-service", "read:profile")), 403, authz.CodeInsufficientScope, ""},
		{"public without token", "t.health", nil, 0, "", ""},
		{"public with an access token", "t.health", header(HeaderAuthorization, "Bearer "+accessTok), 401, authz.CodeInvalidToken, denied},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				msg, err := NewMsg(context.Background(), tc.subj, nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, vs := range tc.hdr {
					msg.Header[k] = vs
				}
				reply, err := nc.RequestMsg(msg, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				err = replyError(tc.subj, reply)
				if tc.wantStatus == 0 {
					if err != nil || string(reply.Data) != "ok" {
						t.Fatalf("want ok, got %q, %v", reply.Data, err)
					}
					return
				}
				var se *ServiceError
				if !errors.As(err, &se) || se.Code != tc.wantStatus || authz.CodeOf(err) != tc.wantCode {
					t.Fatalf("got %v (code %q), want %d %s", err, authz.CodeOf(err), tc.wantStatus, tc.wantCode)
				}
				if !strings.Contains(se.Description, tc.wantIn) {
					t.Fatalf("description %q lacks %q", se.Description, tc.wantIn)
				}
				for _, vs := range tc.hdr {
					for _, v := range vs {
						tok := strings.TrimPrefix(v, "Bearer ")
						if tok != "" && strings.Contains(err.Error(), tok) {
							t.Fatal("error echoes the token")
						}
					}
				}
			})
		}
	})

	count := func(endpoint, result, reason string) float64 {
		return testutil.ToFloat64(metrics.requests.WithLabelValues("users", endpoint, result, reason))
	}
	for _, c := range []struct {
		endpoint, result, reason string
		want                     float64
	}{
		{"profile", "allowed", "ok", 1},
		{"profile", "denied", "access_token_on_nats", 3},
		{"health", "denied", "access_token_on_nats", 1},
		{"profile", "denied", "malformed_header", 2},
		{"profile", "denied", "missing_token", 2},
		{"cancel", "allowed", "ok", 1},
		{"health", "allowed", "public", 1},
	} {
		if got := count(c.endpoint, c.result, c.reason); got != c.want {
			t.Errorf("%s %s %s counted %v, want %v", c.endpoint, c.result, c.reason, got, c.want)
		}
	}

	t.Run("Request maps errors like replyError", func(t *testing.T) {
		_, err := Request(context.Background(), nc, "t.admin", nil)
		if authz.CodeOf(err) != authz.CodeMissingToken {
			t.Fatalf("Request without token: %v", err)
		}
		ctx, cancel := context.WithTimeout(txnCtx(t, m.txn, user), 5*time.Second)
		defer cancel()
		_, err = Request(ctx, nc, "t.admin", nil)
		var se *ServiceError
		if !errors.As(err, &se) || se.Code != 403 || !errors.Is(err, authz.ErrInsufficientScope) {
			t.Fatalf("Request with a narrow token: %v", err)
		}
	})
}

func TestAddEndpointRequiresPolicy(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	svc := newTestService(t, nc, "users", m.txn)
	err := svc.AddEndpoint("open", "t.open", authz.Policy{}, func(context.Context, micro.Request) {})
	if !errors.Is(err, authz.ErrNoPolicy) {
		t.Fatalf("zero policy accepted: %v", err)
	}
	err = svc.AddEndpoint("void", "t.void", authz.RequireAll("cancel:orders"), func(context.Context, micro.Request) {})
	if !errors.Is(err, authz.ErrPolicyWithoutWho) {
		t.Fatalf("policy that does not say who accepted: %v", err)
	}
	if n := len(svc.Micro().Info().Endpoints); n != 0 {
		t.Fatalf("%d endpoints registered", n)
	}
}

// TestEndpointPanicIsAnError: a handler that panics answers 500 and the
// service goes on serving (micro itself does not recover).
func TestEndpointPanicIsAnError(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	svc := newTestService(t, nc, "users", m.txn)
	if err := svc.AddEndpoint("boom", "t.boom", authz.Authenticated().Users(), func(_ context.Context, req micro.Request) {
		if string(req.Data()) == "panic" {
			panic("handler bug")
		}
		_ = req.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(userCtx(t, m.access, m.ex, m.tenant.Token(t, nil), anySubject("read:profile")), 5*time.Second)
	defer cancel()
	for range 2 {
		_, err := Request(ctx, nc, "t.boom", []byte("panic"))
		var se *ServiceError
		if !errors.As(err, &se) || se.Code != 500 || strings.Contains(se.Description, "handler bug") {
			t.Fatalf("panicking handler: err = %v, want a 500 that does not leak the panic", err)
		}
	}
	reply, err := Request(ctx, nc, "t.boom", []byte("hello"))
	if err != nil || string(reply.Data) != "ok" {
		t.Fatalf("after the panics: %v %q", err, reply.Data)
	}
}

// TestRequestRenewsRefusedServiceToken: under AsService, a 401 invalid_token
// answer (from the receiver for the exchanged transaction token, or from the
// Transaction Token Service for the M2M token itself) drops the M2M token and
// the transaction tokens cached for it, and the request is retried once with
// new ones. A 403 is not a dead token, and a caller's token is never retried.
func TestRequestRenewsRefusedServiceToken(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	svc := newTestService(t, nc, "users", m.txn)
	var calls atomic.Int32
	ok := func(ctx context.Context, req micro.Request) {
		calls.Add(1)
		_ = req.Respond([]byte("ok"))
	}
	if err := svc.AddEndpoint("profile", "t.profile", authz.RequireAll("read:users").Clients("orders-service"), ok); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddEndpoint("admin", "t.admin", authz.RequireAll("admin:users").Clients("orders-service"), ok); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// t.admin's receivers need admin:users but the table narrows to
	// read:users (a mistake): its answers are 403s.
	base := WithOutbound(ctx, &Outbound{Exchanger: m.ex, Scopes: hops(map[string][]string{
		"t.profile": {"read:users"}, "t.admin": {"read:users"},
	})})
	// A transaction token service no receiver trusts: what the mesh's own
	// looks like after a compromised key was retired from its JWKS.
	retired := authztest.NewTxnIssuer(t)
	precache := func(t *testing.T, m2m string) {
		t.Helper()
		m.ex.mintWith(retired)
		defer m.ex.mintWith(m.tts)
		if _, err := m.ex.Exchange(ctx, m2m, []string{"read:users"}); err != nil {
			t.Fatal(err)
		}
	}
	exchangesOf := func(tok string) int {
		n := 0
		for _, c := range m.ex.calls() {
			if c.subjectToken == tok {
				n++
			}
		}
		return n
	}
	forgot := func(tok string) int {
		return len(slices.DeleteFunc(m.ex.forgottenTokens(), func(s string) bool { return s != tok }))
	}

	// Subtests share the exchanger and its minter: they run in order.
	t.Run("dead cached transaction token, new service token", func(t *testing.T) {
		a, b := m.m2mToken(t, "orders-service", "read:users"), m.m2mToken(t, "orders-service", "read:users")
		precache(t, a)
		before := calls.Load()
		src := &rotatingSource{toks: []string{a, b}}
		reply, err := Request(AsService(base, src), nc, "t.profile", nil)
		if err != nil || string(reply.Data) != "ok" {
			t.Fatalf("renewed request: %v", err)
		}
		if inv := src.invalidations(); len(inv) != 1 || inv[0] != a || calls.Load()-before != 1 {
			t.Fatalf("invalidated %d tokens, handler ran %d times", len(inv), calls.Load()-before)
		}
		if forgot(a) != 1 || exchangesOf(b) != 1 {
			t.Fatalf("forgot the old service token %d times, exchanged the new one %d times", forgot(a), exchangesOf(b))
		}
	})

	t.Run("dead cached transaction token, same service token", func(t *testing.T) {
		// The source hands out the same (still good) M2M token again: the
		// request succeeds only because the cached transaction token was
		// dropped and a new one exchanged.
		c := m.m2mToken(t, "orders-service", "read:users")
		precache(t, c)
		src := &rotatingSource{toks: []string{c}}
		if _, err := Request(AsService(base, src), nc, "t.profile", nil); err != nil {
			t.Fatalf("request after dropping the dead transaction token: %v", err)
		}
		if len(src.invalidations()) != 1 || forgot(c) != 1 || exchangesOf(c) != 2 {
			t.Fatalf("invalidated %d, forgot %d, exchanged %d times", len(src.invalidations()), forgot(c), exchangesOf(c))
		}
	})

	t.Run("refused every time: one retry, then the 401", func(t *testing.T) {
		m.ex.mintWith(retired)
		defer m.ex.mintWith(m.tts)
		d, e := m.m2mToken(t, "orders-service", "read:users"), m.m2mToken(t, "orders-service", "read:users")
		src := &rotatingSource{toks: []string{d, e}}
		before := calls.Load()
		if _, err := Request(AsService(base, src), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("always refused: %v", err)
		}
		if len(src.invalidations()) != 1 || exchangesOf(d)+exchangesOf(e) != 2 || calls.Load() != before {
			t.Fatalf("invalidated %d times, exchanged %d times, want 1 and 2", len(src.invalidations()), exchangesOf(d)+exchangesOf(e))
		}
	})

	// The service token's tenant key was revoked: the Transaction Token
	// Service refuses to exchange it.
	good := m.tenant.SigningKey()
	m.tenant.SetSigningKey(m.tenant.NewKey(t))
	dead := m.m2mToken(t, "orders-service", "read:users")
	m.tenant.SetSigningKey(good)

	t.Run("service token refused by the token service", func(t *testing.T) {
		fresh := m.m2mToken(t, "orders-service", "read:users")
		src := &rotatingSource{toks: []string{dead, fresh}}
		if _, err := Request(AsService(base, src), nc, "t.profile", nil); err != nil {
			t.Fatalf("renewed request: %v", err)
		}
		if inv := src.invalidations(); len(inv) != 1 || inv[0] != dead || exchangesOf(fresh) != 1 {
			t.Fatalf("invalidated %d tokens, exchanged the fresh one %d times", len(inv), exchangesOf(fresh))
		}
	})

	t.Run("service token refused by the token service every time", func(t *testing.T) {
		stuck := &rotatingSource{toks: []string{dead}}
		if _, err := Request(AsService(base, stuck), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("stuck source: %v", err)
		}
		if n := len(stuck.invalidations()); n != 1 {
			t.Fatalf("stuck source invalidated %d times, want 1", n)
		}
	})

	t.Run("403 is not a dead token", func(t *testing.T) {
		narrow := &rotatingSource{toks: []string{m.m2mToken(t, "orders-service", "read:users"), m.m2mToken(t, "orders-service", "read:users")}}
		before := len(m.ex.forgottenTokens())
		if _, err := Request(AsService(base, narrow), nc, "t.admin", nil); authz.CodeOf(err) != authz.CodeInsufficientScope {
			t.Fatalf("narrow token: %v", err)
		}
		if len(narrow.invalidations()) != 0 || len(m.ex.forgottenTokens()) != before {
			t.Fatal("a 403 invalidated the token")
		}
	})

	t.Run("token service refusing a scope is not a dead token", func(t *testing.T) {
		other := &rotatingSource{toks: []string{m.m2mToken(t, "orders-service", "read:orders"), m.m2mToken(t, "orders-service", "read:users")}}
		if _, err := Request(AsService(base, other), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInsufficientScope {
			t.Fatalf("token without the scope: %v", err)
		}
		if len(other.invalidations()) != 0 {
			t.Fatal("an insufficient_scope exchange invalidated the token")
		}
	})

	t.Run("a caller's token is not renewed", func(t *testing.T) {
		m.ex.mintWith(retired)
		defer m.ex.mintWith(m.tts)
		access := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:users"}})
		uctx := userCtx(t, m.access, m.ex, access, anySubject("read:users"))
		if _, err := Request(uctx, nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("caller token: %v", err)
		}
		if exchangesOf(access) != 1 || forgot(access) != 0 {
			t.Fatalf("caller's token exchanged %d times, forgotten %d times", exchangesOf(access), forgot(access))
		}
		// A transaction token received from upstream is forwarded once.
		n := len(m.ex.calls())
		deadTxn := retired.Token(t, userSub, "read:users", nil)
		hctx := authz.WithClaims(base, &authz.Claims{Subject: userSub, Txn: "t-1"}, deadTxn)
		if _, err := Request(hctx, nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
			t.Fatalf("forwarded token: %v", err)
		}
		if len(m.ex.calls()) != n {
			t.Fatal("a forwarded transaction token was exchanged")
		}
	})
}
