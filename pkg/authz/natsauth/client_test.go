package natsauth

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
)

// TestOutgoingToken: which transaction token a message gets, and that
// anything that would need an exchange nobody configured fails instead of
// sending a message without (or with the wrong) identity.
func TestOutgoingToken(t *testing.T) {
	t.Parallel()
	httpClaims := &authz.Claims{Subject: userSub, Permissions: []string{"read:profile"}}
	withOut := func(ctx context.Context, ex Exchanger, scopes func(string) []string) context.Context {
		return WithOutbound(ctx, &Outbound{Exchanger: ex, Scopes: scopes})
	}
	bg := context.Background()
	cases := []struct {
		name    string
		ctx     context.Context
		want    string // "" with wantErr false: no token
		wantErr bool
	}{
		{"no identity: no token", bg, "", false},
		{"no identity, Outbound set: no token", withOut(bg, &stubExchanger{}, anySubject("read:profile")), "", false},
		{"HTTP caller is exchanged, narrowed to the subject's scopes",
			withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), &stubExchanger{}, hops(map[string][]string{"s": {"read:profile"}})),
			"txn(access.tok.en;read:profile)", false},
		{"HTTP caller without Outbound", authz.WithClaims(bg, httpClaims, "access.tok.en"), "", true},
		{"HTTP caller, Outbound without exchanger", withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), nil, anySubject("read:profile")), "", true},
		{"HTTP caller, subject not in the table", withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), &stubExchanger{}, hops(map[string][]string{"other": {"read:profile"}})), "", true},
		{"HTTP caller, no Scopes func", withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), &stubExchanger{}, nil), "", true},
		{"HTTP caller, token service down", withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), &stubExchanger{err: ErrTxnUnavailable}, anySubject("read:profile")), "", true},
		{"DPoP-bound token without a verified proof is never exchanged nor sent",
			withOut(authz.WithClaims(bg, &authz.Claims{Subject: userSub, Permissions: []string{"read:profile"}, JKT: "jkt"}, "bound.tok.en"), &stubExchanger{}, anySubject("read:profile")),
			"", true},
		{"transaction token is forwarded unmodified", authz.WithClaims(bg, &authz.Claims{Subject: userSub, Txn: "t-1"}, "txn.tok.en"), "txn.tok.en", false},
		{"transaction token is forwarded even with an Outbound", withOut(authz.WithClaims(bg, &authz.Claims{Subject: userSub, Txn: "t-1"}, "txn.tok.en"), &stubExchanger{}, anySubject("read:profile")), "txn.tok.en", false},
		{"service identity is exchanged", withOut(AsService(bg, staticToken("m2m")), &stubExchanger{}, anySubject("cancel:orders")), "txn(m2m;cancel:orders)", false},
		{"service identity without Outbound", AsService(bg, staticToken("m2m")), "", true},
		{"service identity, subject not in the table", withOut(AsService(bg, staticToken("m2m")), &stubExchanger{}, hops(nil)), "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msg, err := NewMsg(tc.ctx, "s", nil)
			if tc.wantErr {
				if err == nil || msg != nil {
					t.Fatalf("NewMsg = %v, %v; want an error and no message", msg, err)
				}
				if _, perr := PublishEvent(tc.ctx, nil, "s", "t", "e", userSub, nil); perr == nil {
					t.Fatal("PublishEvent went ahead")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Header.Get(HeaderTxnToken); got != tc.want {
				t.Fatalf("Txn-Token %q, want %q", got, tc.want)
			}
			if _, ok := msg.Header[HeaderAuthorization]; ok {
				t.Fatal("Authorization on NATS")
			}
		})
	}

	t.Run("an unavailable token service keeps its code", func(t *testing.T) {
		t.Parallel()
		ctx := withOut(authz.WithClaims(bg, httpClaims, "access.tok.en"), &stubExchanger{err: ErrTxnUnavailable}, anySubject("read:profile"))
		_, err := NewMsg(ctx, "s", nil)
		if authz.CodeOf(err) != authz.CodeKeysUnavailable || !errors.Is(err, ErrTxnUnavailable) {
			t.Fatalf("%v: want keys_unavailable (503 with Retry-After at the edge)", err)
		}
	})
}

// TestRequestDeniedSendsNothing: a Request that cannot get a transaction
// token fails before anything reaches the subject.
func TestRequestDeniedSendsNothing(t *testing.T) {
	t.Parallel()
	nc, _ := connect(t, startNATS(t))
	var got atomic.Int32
	sub, err := nc.Subscribe("t.denied", func(m *nats.Msg) { got.Add(1); _ = m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	httpCtx := authz.WithClaims(ctx, &authz.Claims{Subject: userSub}, "access.tok.en")
	for name, c := range map[string]context.Context{
		"no Outbound":     httpCtx,
		"unknown subject": WithOutbound(httpCtx, &Outbound{Exchanger: &stubExchanger{}, Scopes: hops(map[string][]string{"t.other": {"read:profile"}})}),
	} {
		if _, err := Request(c, nc, "t.denied", nil); err == nil {
			t.Errorf("%s: request went ahead", name)
		}
	}
	// Make sure anything sent would have arrived by now.
	if _, err := nc.Request("t.denied", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := got.Load(); n != 1 {
		t.Fatalf("the subject received %d messages, want only the probe", n)
	}
}
