package natsauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
)

func TestNewMsgHeaders(t *testing.T) {
	t.Parallel()
	t.Run("fresh context: a request id, no trace, no token", func(t *testing.T) {
		t.Parallel()
		msg, err := NewMsg(context.Background(), "s", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get(HeaderTraceparent) != "" || msg.Header.Get(HeaderRequestID) == "" {
			t.Fatalf("headers %v", msg.Header)
		}
		if _, ok := msg.Header[HeaderTxnToken]; ok {
			t.Fatal("Txn-Token without a token")
		}
		if _, ok := msg.Header[HeaderAuthorization]; ok {
			t.Fatal("Authorization on NATS")
		}
	})
	t.Run("transaction token, trace and request id from context", func(t *testing.T) {
		t.Parallel()
		in := nats.Header{}
		in.Set(HeaderRequestID, "r-1")
		in.Set(HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		in.Set(HeaderTracestate, "k=v")
		ctx := ContextFromHeaders(authz.WithClaims(context.Background(), &authz.Claims{Txn: "t-1"}, "a.b.c"), in)
		msg, err := NewMsg(ctx, "s", nil)
		if err != nil {
			t.Fatal(err)
		}
		// NewMsg carries ctx's span context as it is: the span of a send
		// is started by Request and Publish (TestSpans*).
		tp := msg.Header.Get(HeaderTraceparent)
		if msg.Header.Get(HeaderTxnToken) != "a.b.c" || msg.Header.Get(HeaderRequestID) != "r-1" ||
			tp != in.Get(HeaderTraceparent) || msg.Header.Get(HeaderTracestate) != "k=v" {
			t.Fatalf("headers %v", msg.Header)
		}
		if _, ok := msg.Header[HeaderAuthorization]; ok {
			t.Fatal("Authorization on NATS")
		}
	})
	t.Run("explicit service identity wins", func(t *testing.T) {
		t.Parallel()
		ex := &stubExchanger{}
		ctx := WithOutbound(context.Background(), &Outbound{Exchanger: ex, Scopes: anySubject("cancel:orders")})
		// Even inside a NATS handler that holds a caller's transaction token.
		ctx = AsService(authz.WithClaims(ctx, &authz.Claims{Txn: "t-1"}, "user.txn.token"), staticToken("m2m.tok.en"))
		msg, err := NewMsg(ctx, "s", nil)
		if err != nil || msg.Header.Get(HeaderTxnToken) != "txn(m2m.tok.en;cancel:orders)" {
			t.Fatalf("%v %v", msg, err)
		}
		if _, ok := msg.Header[HeaderAuthorization]; ok {
			t.Fatal("the M2M token crossed NATS")
		}
	})
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// stubExchanger "exchanges" by naming what it was given.
type stubExchanger struct{ err error }

func (s *stubExchanger) Exchange(_ context.Context, tok string, scopes []string) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	return "txn(" + tok + ";" + strings.Join(scopes, " ") + ")", nil
}

func (s *stubExchanger) ExchangeEvent(ctx context.Context, tok string, scopes []string, ev authz.EventBinding) (string, time.Time, error) {
	t, err := s.Exchange(ctx, tok, scopes)
	return t + "@" + ev.SHA256, time.Now().Add(time.Hour), err
}

// TestTokenFromHeader: exactly one Txn-Token, and never an Authorization
// header, whatever it holds.
func TestTokenFromHeader(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		hdr        nats.Header
		want       string
		wantCode   authz.Code
		wantReason string
	}{
		{"one token", header(HeaderTxnToken, "a.b.c"), "a.b.c", "", ""},
		{"no header", nats.Header{}, "", authz.CodeMissingToken, ""},
		{"empty value", header(HeaderTxnToken, ""), "", authz.CodeMissingToken, ""},
		{"two values", header(HeaderTxnToken, "a.b.c", HeaderTxnToken, "d.e.f"), "", authz.CodeInvalidToken, "malformed_header"},
		{"scheme prefix", header(HeaderTxnToken, "Bearer a.b.c"), "", authz.CodeInvalidToken, "malformed_header"},
		{"comma-joined", header(HeaderTxnToken, "a.b.c,d.e.f"), "", authz.CodeInvalidToken, "malformed_header"},
		{"wrong case is not the header", header("txn-token", "a.b.c"), "", authz.CodeMissingToken, ""},
		{"Authorization alone", header(HeaderAuthorization, "Bearer a.b.c"), "", authz.CodeInvalidToken, "access_token_on_nats"},
		{"Authorization beside Txn-Token", header(HeaderTxnToken, "a.b.c", HeaderAuthorization, "Bearer x.y.z"), "", authz.CodeInvalidToken, "access_token_on_nats"},
		{"empty Authorization", header(HeaderTxnToken, "a.b.c", HeaderAuthorization, ""), "", authz.CodeInvalidToken, "access_token_on_nats"},
	}
	for _, tc := range cases {
		got, err := tokenFromHeader(tc.hdr)
		var e *authz.Error
		switch {
		case tc.wantCode == "" && (err != nil || got != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.wantCode != "" && (authz.CodeOf(err) != tc.wantCode || got != ""):
			t.Errorf("%s: %q, %v; want %s", tc.name, got, err, tc.wantCode)
		case tc.wantReason != "" && (!errors.As(err, &e) || e.Reason != tc.wantReason):
			t.Errorf("%s: %v; want reason %s", tc.name, err, tc.wantReason)
		}
	}
}
