package natsauth

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// The transaction-token receivers of this package (a service's requests and
// a consumer's events) against authztest's attack corpus, and fuzzed from
// it. The corpus is the TxnValidator's; these check each receiver answers
// it in its own terms.

// attackSub and attackScope are the sub and scope of the corpus's tokens:
// what the entry points under attack admit, so that only the attack is
// refused.
const attackSub, attackScope = "auth0|alice", "read:profile"

// profileService returns a connection to a server with one service on it:
// authmesh.users.profile, for users with read:profile, answering "ok".
func profileService(tb testing.TB, m *testMesh) *nats.Conn {
	tb.Helper()
	nc, _ := connect(tb, startNATS(tb))
	svc := newTestService(tb, nc, "users", m.txn)
	ok := func(_ context.Context, req micro.Request) { _ = req.Respond([]byte("ok")) }
	if err := svc.AddEndpoint("profile", "authmesh.users.profile", authz.RequireAll(attackScope).Users(), ok); err != nil {
		tb.Fatal(err)
	}
	return nc
}

// askProfile sends a request with txnToken as its Txn-Token.
func askProfile(tb testing.TB, nc *nats.Conn, txnToken string) (*nats.Msg, error) {
	tb.Helper()
	msg := nats.NewMsg("authmesh.users.profile")
	msg.Header.Set(HeaderTxnToken, txnToken)
	reply, err := nc.RequestMsg(msg, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	return reply, replyError(msg.Subject, reply)
}

// TestServiceRefusesTxnAttacks: every attack is answered 401 invalid_token,
// never quoted; the service's own token is answered.
func TestServiceRefusesTxnAttacks(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	nc := profileService(t, m)
	if reply, err := askProfile(t, nc, m.tts.Token(t, attackSub, attackScope, nil)); err != nil || string(reply.Data) != "ok" {
		t.Fatalf("the service's own token: %q, %v", reply.Data, err)
	}
	for _, a := range authztest.TxnTokenAttacks(t, m.tts, m.tenant) {
		t.Run(a.Name, func(t *testing.T) {
			t.Parallel()
			_, err := askProfile(t, nc, a.Token)
			var se *ServiceError
			if !errors.As(err, &se) || se.Code != 401 || authz.CodeOf(err) != authz.CodeInvalidToken {
				t.Fatalf("got %v (code %q), want 401 invalid_token", err, authz.CodeOf(err))
			}
			if strings.Contains(err.Error(), a.Token) {
				t.Fatal("the answer quotes the token")
			}
		})
	}
}

// TestConsumerRefusesTxnAttacks: an event carrying an attack is
// dead-lettered with the validator's reason ("invalid_token: <reason>"),
// before its binding is looked at, and never handled; an event with its own
// bound token is handled.
func TestConsumerRefusesTxnAttacks(t *testing.T) {
	t.Parallel()
	r := newEventRig(t)
	attacks := authztest.TxnTokenAttacks(t, r.tts, r.tenant)
	subj := func(i int) string { return "orders.events.attack." + strconv.Itoa(i) }
	data := envelope(t, attackSub, attackSub)
	for i, a := range attacks {
		publishRaw(t, r.js, subj(i), header(HeaderTxnToken, a.Token), data)
	}
	control := subj(len(attacks))
	publishRaw(t, r.js, control, header(HeaderTxnToken, r.tts.Token(t, attackSub, attackScope, bound(control, data))), data)
	r.run(t, ConsumerConfig{}, nil)

	authztest.Eventually(t, 5*time.Second, func() bool { ev, _ := r.outcome(control); return ev != nil }, "the control event handled")
	for i, a := range attacks {
		t.Run(a.Name, func(t *testing.T) {
			var ev *Event
			var dead *nats.Msg
			authztest.Eventually(t, 5*time.Second, func() bool { ev, dead = r.outcome(subj(i)); return ev != nil || dead != nil }, "an outcome")
			if ev != nil {
				t.Fatal("handled")
			}
			if got, want := dead.Header.Get(HeaderDLQReason), "invalid_token: "+a.Reason; got != want {
				t.Fatalf("dead-letter reason %q, want %q", got, want)
			}
			if _, ok := dead.Header[HeaderTxnToken]; ok {
				t.Fatal("the dead letter keeps the token")
			}
		})
	}
	for name, c := range map[string]prometheus.Counter{
		"dead letters": r.metrics.deadLettered.WithLabelValues("billing-orders", "invalid_token"),
		"rejections":   r.metrics.events.WithLabelValues("billing-orders", "rejected", "invalid_token"),
	} {
		if got := testutil.ToFloat64(c); got != float64(len(attacks)) {
			t.Errorf("invalid_token %s counted %v, want %d", name, got, len(attacks))
		}
	}
}

// FuzzServiceTxnToken feeds a service arbitrary Txn-Token headers over
// NATS: it always answers, a 4xx without quoting the header unless it holds
// the service's own token, never a 5xx.
func FuzzServiceTxnToken(f *testing.F) {
	m := newMesh(f)
	nc := profileService(f, m)
	good := m.tts.Token(f, attackSub, attackScope, nil)
	if _, err := askProfile(f, nc, good); err != nil {
		f.Fatalf("the service's own token: %v", err)
	}
	for _, s := range append(authztest.Seeds(authztest.TxnTokenAttacks(f, m.tts, m.tenant)), good, "", "Bearer "+good, " "+good) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		if strings.ContainsAny(token, "\r\n") {
			t.Skip("a header value cannot hold a line break")
		}
		reply, err := askProfile(t, nc, token)
		if err == nil {
			if string(reply.Data) != "ok" || !strings.Contains(token, signedPart(good)) {
				t.Fatalf("answered %q to a header without the service's token", reply.Data)
			}
			return
		}
		var se *ServiceError
		if !errors.As(err, &se) || se.Code < 400 || se.Code >= 500 {
			t.Fatalf("answer %v, want a 4xx", err)
		}
		if len(token) >= 16 && strings.Contains(err.Error(), token) {
			t.Fatal("the answer quotes the header")
		}
	})
}

// signedPart is tok up to its signature: what must be the same for another
// token to verify as tok (base64 spells one signature several ways).
func signedPart(tok string) string { return tok[:strings.LastIndex(tok, ".")+1] }

// storedMsg is a JetStream delivery as far as Consumer.verify reads one.
type storedMsg struct {
	jetstream.Msg // nil: verify reads only what is below
	subject       string
	data          []byte
	hdr           nats.Header
}

func (m storedMsg) Subject() string      { return m.subject }
func (m storedMsg) Data() []byte         { return m.data }
func (m storedMsg) Headers() nats.Header { return m.hdr }

// FuzzConsumerEvent feeds a consumer's event verification arbitrary
// Txn-Token headers on one event: it never panics, accepts only the token
// bound to that event, and refuses the rest with a reason that does not
// quote the header.
func FuzzConsumerEvent(f *testing.F) {
	tts := authztest.NewTxnIssuer(f)
	keys := startKeys(f, authz.WithJWKSURL(tts.JWKSURL()), authz.WithAlgorithm("ES256"), authz.WithRefetchCooldown(1<<62))
	v, err := authz.NewTxnValidator(keys, authz.WithIssuers(tts.Issuer), authz.WithAudiences(tts.TrustDomain))
	if err != nil {
		f.Fatal(err)
	}
	c, err := NewConsumer(struct{ jetstream.JetStream }{}, v, ConsumerConfig{Stream: "ORDERS_EVENTS", Durable: "billing-orders",
		DeadLetterPrefix: "dlq.billing", Policy: authz.Authenticated().Users()}, func(context.Context, *Event) error { return nil })
	if err != nil {
		f.Fatal(err)
	}
	const subject = "orders.events.created"
	data := []byte(`{"id":"e1","type":"order.created","actor":"` + attackSub + `","user_id":"` + attackSub +
		`","occurred_at":"2026-01-01T00:00:00Z","data":{}}`)
	good := tts.Token(f, attackSub, attackScope, bound(subject, data))
	verify := func(token string) (*Event, *rejection) {
		msg := storedMsg{subject: subject, data: data, hdr: nats.Header{HeaderTxnToken: {token}}}
		ev, _, rej := c.verify(context.Background(), msg, &jetstream.MsgMetadata{Timestamp: time.Now()})
		return ev, rej
	}
	if _, rej := verify(good); rej != nil {
		f.Fatalf("the event's own token: %s", rej.reason())
	}
	for _, s := range append(authztest.Seeds(authztest.TxnTokenAttacks(f, tts, authztest.NewIssuer(f))), good, "", "Bearer "+good) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		ev, rej := verify(token)
		if rej == nil {
			if !strings.HasPrefix(token, signedPart(good)) || ev.Actor != attackSub {
				t.Fatalf("accepted an event as %+v", ev)
			}
			return
		}
		if rej.label == "" || (len(token) >= 16 && strings.Contains(rej.reason(), token)) {
			t.Fatalf("rejection %q", rej.reason())
		}
	})
}
