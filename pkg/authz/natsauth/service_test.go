package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

type seen struct {
	Sub, RequestID, Traceparent, Downstream string
}

// TestRequestPropagation: a caller's token, request id and trace travel
// through two hops of micro endpoints, each validating with its own policy.
func TestRequestPropagation(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss)
	nc, _ := connect(t, startNATS(t))

	back, err := NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Stop() })
	if err := back.AddEndpoint("profile", "authmesh.users.profile", authz.RequireAll("read:profile").Users(),
		func(ctx context.Context, req micro.Request) {
			c, _ := authz.ClaimsFromContext(ctx)
			id, _ := RequestIDFromContext(ctx)
			tc, _ := TraceContextFromContext(ctx)
			_ = req.RespondJSON(seen{Sub: c.Subject, RequestID: id, Traceparent: tc.Traceparent})
		}); err != nil {
		t.Fatal(err)
	}
	front, err := NewService(nc, micro.Config{Name: "orders", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Stop() })
	if err := front.AddEndpoint("summary", "authmesh.orders.summary", authz.Authenticated().Users(),
		func(ctx context.Context, req micro.Request) {
			// The handler's ctx carries the caller's identity onward.
			reply, err := Request(ctx, nc, "authmesh.users.profile", nil)
			if err != nil {
				_ = req.Error("500", err.Error(), nil)
				return
			}
			var s seen
			_ = json.Unmarshal(reply.Data, &s)
			s.Downstream = s.Traceparent
			tc, _ := TraceContextFromContext(ctx)
			s.Traceparent = tc.Traceparent
			_ = req.RespondJSON(s)
		}); err != nil {
		t.Fatal(err)
	}

	tok := iss.Token(t, nil)
	incoming := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := userCtx(t, v, tok)
	ctx = WithRequestID(ctx, "req-123")
	ctx = WithTraceContext(ctx, TraceContext{Traceparent: incoming, Tracestate: "vendor=1"})
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
	if got.Sub != "auth0|6553da60a54af58e29493993" || got.RequestID != "req-123" {
		t.Fatalf("downstream saw sub %q request id %q", got.Sub, got.RequestID)
	}
	traceID := incoming[3:35]
	for _, tp := range []string{got.Traceparent, got.Downstream} {
		if !validTraceparent(tp) || tp[3:35] != traceID || tp == incoming {
			t.Fatalf("traceparent %q: want trace id %s with a new parent id", tp, traceID)
		}
	}
	if got.Traceparent == got.Downstream {
		t.Fatal("each hop must get its own parent id")
	}
}

// TestEndpointPolicy: every authorization outcome maps to the right micro
// error code, authz.CodeOf recovers the code, and the token is never echoed.
func TestEndpointPolicy(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss)
	nc, _ := connect(t, startNATS(t))
	svc, err := NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
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

	expired := iss.Token(t, authztest.Claims{"iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix()})
	foreign := authztest.Sign(t, foreignRSAKey(t), map[string]any{"alg": "RS256", "typ": "JWT", "kid": iss.SigningKey().ID}, iss.DefaultClaims())
	cases := []struct {
		name, subj, header string
		wantStatus         int
		wantCode           authz.Code
	}{
		{"user with permission", "t.profile", "Bearer " + iss.Token(t, nil), 0, ""},
		{"missing token", "t.profile", "", 401, authz.CodeMissingToken},
		{"malformed header", "t.profile", "Basic dXNlcjpwdw==", 401, authz.CodeInvalidToken},
		{"expired", "t.profile", "Bearer " + expired, 401, authz.CodeInvalidToken},
		{"foreign key", "t.profile", "Bearer " + foreign, 401, authz.CodeInvalidToken},
		{"missing permission", "t.admin", "Bearer " + iss.Token(t, nil), 403, authz.CodeInsufficientScope},
		{"m2m allowed client", "t.cancel", "Bearer " + iss.M2MToken(t, "users-service", "cancel:orders"), 0, ""},
		{"m2m other client", "t.cancel", "Bearer " + iss.M2MToken(t, "billing-service", "cancel:orders"), 403, authz.CodeInsufficientScope},
		{"user on m2m endpoint", "t.cancel", "Bearer " + iss.Token(t, authztest.Claims{"permissions": []string{"cancel:orders"}}), 403, authz.CodeInsufficientScope},
		{"m2m on users-only endpoint", "t.profile", "Bearer " + iss.M2MToken(t, "users-service", "read:profile"), 403, authz.CodeInsufficientScope},
		{"public without token", "t.health", "", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msg, err := NewMsg(context.Background(), tc.subj, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				msg.Header.Set(HeaderAuthorization, tc.header)
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
			if tok, _ := bearer(tc.header); tok != "" && strings.Contains(err.Error(), tok) {
				t.Fatal("error echoes the token")
			}
		})
	}

	t.Run("metrics count denials", func(t *testing.T) {
		// Covered with a registry in TestConsumerRejects; here: Request maps
		// errors the same way as replyError.
		_, err := Request(context.Background(), nc, "t.admin", nil)
		if authz.CodeOf(err) != authz.CodeMissingToken {
			t.Fatalf("Request without token: %v", err)
		}
	})
}

func TestAddEndpointRequiresPolicy(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss)
	nc, _ := connect(t, startNATS(t))
	svc, err := NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = svc.AddEndpoint("open", "t.open", authz.Policy{}, func(context.Context, micro.Request) {})
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
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss)
	nc, _ := connect(t, startNATS(t))
	svc, err := NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint("boom", "t.boom", authz.Authenticated().Users(), func(_ context.Context, req micro.Request) {
		if string(req.Data()) == "panic" {
			panic("handler bug")
		}
		_ = req.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(userCtx(t, v, iss.Token(t, nil)), 5*time.Second)
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

// TestRequestRenewsRefusedServiceToken: a service token the receiver refuses
// as invalid (signed by a key that left the JWKS) is dropped and the request
// retried once with a new one; a caller's token is never retried.
func TestRequestRenewsRefusedServiceToken(t *testing.T) {
	t.Parallel()
	iss := authztest.NewIssuer(t)
	v := newValidator(t, iss)
	nc, _ := connect(t, startNATS(t))
	svc, err := NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	var calls atomic.Int32
	if err := svc.AddEndpoint("profile", "t.profile", authz.RequireAll("read:users").Clients("orders-service"),
		func(ctx context.Context, req micro.Request) {
			calls.Add(1)
			_ = req.Respond([]byte("ok"))
		}); err != nil {
		t.Fatal(err)
	}

	// dead is signed by a key the JWKS does not hold (revoked, say).
	good := iss.SigningKey()
	iss.SetSigningKey(iss.NewKey(t))
	dead := iss.M2MToken(t, "orders-service", "read:users")
	iss.SetSigningKey(good)
	fresh := iss.M2MToken(t, "orders-service", "read:users")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	src := &rotatingSource{toks: []string{dead, fresh}}
	reply, err := Request(AsService(ctx, src), nc, "t.profile", nil)
	if err != nil || string(reply.Data) != "ok" {
		t.Fatalf("renewed request: %v", err)
	}
	if len(src.invalidated) != 1 || src.invalidated[0] != dead || calls.Load() != 1 {
		t.Fatalf("invalidated %d tokens, handler ran %d times", len(src.invalidated), calls.Load())
	}

	// A source that keeps handing out a refused token: one retry, then the 401.
	stuck := &rotatingSource{toks: []string{dead}}
	if _, err := Request(AsService(ctx, stuck), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
		t.Fatalf("stuck source: %v", err)
	}
	if len(stuck.invalidated) != 1 {
		t.Fatalf("stuck source invalidated %d times, want 1", len(stuck.invalidated))
	}

	// Missing scope is not a dead token: no retry.
	narrow := &rotatingSource{toks: []string{iss.M2MToken(t, "orders-service", "read:orders"), fresh}}
	if _, err := Request(AsService(ctx, narrow), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInsufficientScope {
		t.Fatalf("narrow source: %v", err)
	}
	if len(narrow.invalidated) != 0 {
		t.Fatal("a 403 invalidated the token")
	}

	// The caller's own token is not renewed.
	if _, err := Request(authz.WithClaims(ctx, &authz.Claims{}, dead), nc, "t.profile", nil); authz.CodeOf(err) != authz.CodeInvalidToken {
		t.Fatalf("caller token: %v", err)
	}
}
