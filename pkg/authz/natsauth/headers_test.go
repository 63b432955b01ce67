package natsauth

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
)

func TestTraceparent(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":       true,
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra": false,
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":       false,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":       false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":       false,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":       false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":          false,
		"": false,
	}
	for tp, want := range cases {
		if got := validTraceparent(tp); got != want {
			t.Errorf("validTraceparent(%q) = %v", tp, got)
		}
	}
}

func TestNewMsgHeaders(t *testing.T) {
	t.Parallel()
	t.Run("fresh context starts a trace and a request id, no token", func(t *testing.T) {
		t.Parallel()
		msg, err := NewMsg(context.Background(), "s", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if !validTraceparent(msg.Header.Get(HeaderTraceparent)) || msg.Header.Get(HeaderRequestID) == "" {
			t.Fatalf("headers %v", msg.Header)
		}
		if _, ok := msg.Header[HeaderAuthorization]; ok {
			t.Fatal("Authorization without a token")
		}
	})
	t.Run("token, trace and request id from context", func(t *testing.T) {
		t.Parallel()
		in := nats.Header{}
		in.Set(HeaderRequestID, "r-1")
		in.Set(HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		in.Set(HeaderTracestate, "k=v")
		ctx := ContextFromHeaders(authz.WithClaims(context.Background(), &authz.Claims{}, "a.b.c"), in)
		msg, err := NewMsg(ctx, "s", nil)
		if err != nil {
			t.Fatal(err)
		}
		tp := msg.Header.Get(HeaderTraceparent)
		if msg.Header.Get(HeaderAuthorization) != "Bearer a.b.c" || msg.Header.Get(HeaderRequestID) != "r-1" ||
			!strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || tp == in.Get(HeaderTraceparent) ||
			msg.Header.Get(HeaderTracestate) != "k=v" {
			t.Fatalf("headers %v", msg.Header)
		}
	})
	t.Run("explicit service identity wins", func(t *testing.T) {
		t.Parallel()
		ctx := AsService(authz.WithClaims(context.Background(), &authz.Claims{}, "user.tok.en"), staticToken("m2m.tok.en"))
		msg, err := NewMsg(ctx, "s", nil)
		if err != nil || msg.Header.Get(HeaderAuthorization) != "Bearer m2m.tok.en" {
			t.Fatalf("%v %v", msg, err)
		}
	})
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

func TestBearer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Bearer abc":  "abc",
		"bearer abc":  "abc",
		"Bearer  abc": "abc",
		"Bearer":      "",
		"Bearer ":     "",
		"Basic abc":   "",
		"Bearer a b":  "",
		"abc":         "",
	} {
		got, ok := bearer(in)
		if got != want || ok != (want != "") {
			t.Errorf("bearer(%q) = %q, %v", in, got, ok)
		}
	}
}
