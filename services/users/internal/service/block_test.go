package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/services/users/internal/ports"
)

// eventTail reads USERS_EVENTS from its start with meshtest.Tail (the mesh
// lets users read its own stream by STREAM.MSG.GET, not through consumers of
// its own), waiting up to 2 s for each event.
type eventTail struct {
	t    *testing.T
	tail *meshtest.Tail
}

func (s *stack) tailEvents(t *testing.T) *eventTail {
	t.Helper()
	return &eventTail{t: t, tail: meshtest.NewTail(t, s.js, "USERS_EVENTS", 2*time.Second)}
}

type received struct {
	subject string
	msgID   string
	header  nats.Header
	env     natsauth.Envelope
	data    struct {
		UserID string    `json:"user_id"`
		At     time.Time `json:"at"`
	}
}

// next returns the next event, or fails after 2 s.
func (e *eventTail) next() received {
	e.t.Helper()
	msg, err := e.tail.Next()
	if err != nil {
		e.t.Fatalf("no event: %v", err)
	}
	var r received
	r.subject = msg.Subject
	r.msgID = msg.Header.Get(natsauth.HeaderMsgID)
	r.header = msg.Header
	if err := json.Unmarshal(msg.Data, &r.env); err != nil {
		e.t.Fatalf("envelope: %v", err)
	}
	if err := json.Unmarshal(r.env.Data, &r.data); err != nil {
		e.t.Fatalf("data: %v", err)
	}
	return r
}

// none fails if another event arrives within the tail's wait.
func (e *eventTail) none() {
	e.t.Helper()
	if msg, err := e.tail.Next(); err == nil {
		e.t.Fatalf("unexpected event %s: %s", msg.Subject, msg.Data)
	}
}

// eventually polls f until it returns "" or 1 s passes.
func eventually(t *testing.T, within time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBlockAndUnblock(t *testing.T) {
	s := startStack(t)
	carol := s.userToken("carol@authmesh.dev")
	dave := s.userToken("dave@authmesh.dev")
	oldBob := s.userToken("bob@authmesh.dev")
	bobPath := "/v1/users/" + url.PathEscape(bobID)
	events := s.tailEvents(t)

	if r := s.do("GET", "/v1/me", oldBob, ""); r.Status != 200 {
		t.Fatalf("bob before the block: %d %s", r.Status, r.Body)
	}
	// A transaction orders got for bob before the block, as a message in
	// flight or queued would carry it.
	oldBobTxn, err := s.orders.Txn.Exchange(t.Context(), oldBob, mesh.HopScopes(ports.ProfileSubject))
	if err != nil {
		t.Fatal(err)
	}
	profileWith := func(tok string) error {
		ctx, cancel := context.WithTimeout(forwarding(t.Context(), tok), 3*time.Second)
		defer cancel()
		_, err := natsauth.Request(ctx, s.nc, ports.ProfileSubject, nil)
		return err
	}
	if err := profileWith(oldBobTxn); err != nil {
		t.Fatalf("bob's transaction before the block: %v", err)
	}

	r := s.do("POST", bobPath+"/block", carol, "")
	if r.Status != 200 {
		t.Fatalf("block: %d %s", r.Status, r.Body)
	}
	var u userBody
	r.JSON(t, &u)
	if !u.Blocked || u.UserID != bobID {
		t.Fatalf("block answered %+v", u)
	}

	t.Run("old token rejected within 1 s", func(t *testing.T) {
		eventually(t, time.Second, func() string {
			r := s.do("GET", "/v1/me", oldBob, "")
			if r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				return string(r.Body)
			}
			return ""
		})
	})
	t.Run("old transaction rejected on NATS", func(t *testing.T) {
		eventually(t, time.Second, func() string {
			if err := profileWith(oldBobTxn); !errors.Is(err, authz.ErrInvalidToken) {
				return fmt.Sprintf("profile with bob's pre-block transaction: %v", err)
			}
			return ""
		})
	})
	var revokedAt time.Time
	t.Run("revocation entry written", func(t *testing.T) {
		kv, err := s.js.KeyValue(t.Context(), natsauth.RevocationBucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(t.Context(), natsauth.RevocationKey(bobID))
		if err != nil {
			t.Fatalf("no revocation for bob: %v", err)
		}
		var rev natsauth.Revocation
		if err := json.Unmarshal(e.Value(), &rev); err != nil {
			t.Fatal(err)
		}
		if rev.Subject != bobID || time.Since(rev.RevokedAt) > 10*time.Second || rev.RevokedAt.After(time.Now()) {
			t.Fatalf("revocation = %+v", rev)
		}
		revokedAt = rev.RevokedAt
	})
	t.Run("blocked event published with the caller's transaction", func(t *testing.T) {
		ev := events.next()
		if ev.subject != "users.events.blocked" || ev.env.Type != "user.blocked" || ev.env.Actor != carolID ||
			ev.env.UserID != bobID || ev.data.UserID != bobID || ev.env.ID == "" {
			t.Fatalf("event = %+v", ev)
		}
		// Carol's access token stays at the edge; the event carries a
		// transaction token exchanged for it, narrowed to this hop.
		if _, ok := ev.header[natsauth.HeaderAuthorization]; ok {
			t.Fatal("event carries an access token")
		}
		c, err := s.txn.Validate(t.Context(), ev.header.Get(natsauth.HeaderTxnToken))
		if err != nil || c.Subject != carolID || c.RequestingWorkload != "users-service" ||
			!slices.Equal(c.Permissions, mesh.HopScopes(ev.subject)) {
			t.Fatalf("event does not carry the caller's transaction narrowed to the hop: %+v %v", c, err)
		}
		if !strings.HasPrefix(ev.msgID, "user.blocked:"+bobID+"@") {
			t.Fatalf("Nats-Msg-Id = %q", ev.msgID)
		}
		if !revokedAt.IsZero() && !ev.data.At.Equal(revokedAt) {
			t.Fatalf("event at %v, revocation at %v", ev.data.At, revokedAt)
		}
	})
	t.Run("tenant has the user blocked", func(t *testing.T) {
		r := s.do("GET", bobPath, dave, "")
		var u userBody
		r.JSON(t, &u)
		if r.Status != 200 || !u.Blocked {
			t.Fatalf("tenant view: %d %s", r.Status, r.Body)
		}
		if _, err := s.tenant.IssueUserToken("bob@authmesh.dev", audience, ""); err == nil {
			t.Fatal("the tenant still issues tokens to bob")
		}
	})
	t.Run("block again is a no-op", func(t *testing.T) {
		r := s.do("POST", bobPath+"/block", carol, "")
		if r.Status != 200 {
			t.Fatalf("second block: %d %s", r.Status, r.Body)
		}
		events.none()
	})

	r = s.do("POST", bobPath+"/unblock", carol, "")
	if r.Status != 200 {
		t.Fatalf("unblock: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &u)
	if u.Blocked {
		t.Fatalf("unblock answered %+v", u)
	}
	t.Run("unblocked event", func(t *testing.T) {
		ev := events.next()
		if ev.subject != "users.events.unblocked" || ev.env.Type != "user.unblocked" || ev.env.UserID != bobID || ev.env.Actor != carolID {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("fresh token works, old one stays rejected", func(t *testing.T) {
		fresh := s.userToken("bob@authmesh.dev")
		if r := s.do("GET", "/v1/me", fresh, ""); r.Status != 200 {
			t.Fatalf("fresh token: %d %s", r.Status, r.Body)
		}
		if r := s.do("GET", "/v1/me", oldBob, ""); r.Status != 401 {
			t.Fatalf("old token after unblock: %d %s", r.Status, r.Body)
		}
	})
	t.Run("block and unblock again publish again", func(t *testing.T) {
		for _, step := range []string{"block", "unblock"} {
			if r := s.do("POST", bobPath+"/"+step, carol, ""); r.Status != 200 {
				t.Fatalf("%s: %d %s", step, r.Status, r.Body)
			}
			if ev := events.next(); ev.env.Type != "user."+step+"ed" {
				t.Fatalf("after %s got %s", step, ev.env.Type)
			}
		}
	})
}

func TestProfileEndpoint(t *testing.T) {
	s := startStack(t)
	alice := s.userToken("alice@authmesh.dev")
	if r := s.do("PATCH", "/v1/me", alice, `{"shipping_address":{"line1":"2 Rue","city":"Paris","postal_code":"75001","country":"FR"}}`); r.Status != 200 {
		t.Fatalf("patch: %d %s", r.Status, r.Body)
	}
	call := func(t *testing.T, ctx context.Context) (*ProfileReply, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		msg, err := natsauth.Request(ctx, s.nc, ports.ProfileSubject, nil)
		if err != nil {
			return nil, err
		}
		var p ProfileReply
		if err := json.Unmarshal(msg.Data, &p); err != nil {
			t.Fatalf("reply %s: %v", msg.Data, err)
		}
		return &p, nil
	}
	// Transactions that orders holds legitimately but that are not this
	// hop's: its own (the void it asks billing for, cancel:orders), and
	// alice's minted for her order events.
	ordersOwn, err := s.orders.Txn.Exchange(t.Context(), s.clientToken("orders-service"), mesh.HopScopes("authmesh.billing.orders.void"))
	if err != nil {
		t.Fatal(err)
	}
	aliceOrders, err := s.orders.Txn.Exchange(t.Context(), alice, mesh.HopScopes("orders.events.created"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ctx     context.Context
		code    int
		wantErr error
	}{
		{name: "caller's profile", ctx: s.asOrders(t.Context(), alice)},
		{name: "no token", ctx: s.asOrders(t.Context(), ""), code: 401, wantErr: authz.ErrMissingToken},
		{name: "bad token", ctx: forwarding(t.Context(), "x.y.z"), code: 401, wantErr: authz.ErrInvalidToken},
		{name: "an access token as transaction token", ctx: forwarding(t.Context(), alice), code: 401, wantErr: authz.ErrInvalidToken},
		{name: "a service's own transaction", ctx: forwarding(t.Context(), ordersOwn), code: 403, wantErr: authz.ErrInsufficientScope},
		{name: "the caller's transaction for another hop", ctx: forwarding(t.Context(), aliceOrders), code: 403, wantErr: authz.ErrInsufficientScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := call(t, tt.ctx)
			if tt.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if p.UserID != aliceID || p.Email != "alice@authmesh.dev" || p.Name != "Alice Example" || p.ShippingAddress == nil || p.ShippingAddress.City != "Paris" {
					t.Fatalf("profile = %+v", p)
				}
				return
			}
			var se *natsauth.ServiceError
			if !errors.As(err, &se) || se.Code != tt.code || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %d", err, tt.code)
			}
		})
	}
	// The old way: an access token in Authorization, alone or beside a
	// valid transaction token, is refused before anything else.
	valid, err := s.orders.Txn.Exchange(t.Context(), alice, mesh.HopScopes(ports.ProfileSubject))
	if err != nil {
		t.Fatal(err)
	}
	for name, hdr := range map[string]nats.Header{
		"Authorization":                  {natsauth.HeaderAuthorization: {"Bearer " + alice}},
		"Authorization beside Txn-Token": {natsauth.HeaderAuthorization: {"Bearer " + alice}, natsauth.HeaderTxnToken: {valid}},
	} {
		t.Run(name, func(t *testing.T) {
			msg := nats.NewMsg(ports.ProfileSubject)
			msg.Header = hdr
			reply, err := s.nc.RequestMsg(msg, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code, desc := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader); code != "401" ||
				!strings.HasPrefix(desc, string(authz.CodeInvalidToken)) || len(reply.Data) != 0 {
				t.Fatalf("answer %s %q, data %s", code, desc, reply.Data)
			}
		})
	}
}

// ProfileReply is what orders decodes from users/profile.
type ProfileReply struct {
	UserID          string `json:"user_id"`
	Email           string `json:"email"`
	Name            string `json:"name"`
	ShippingAddress *struct {
		Line1      string `json:"line1"`
		City       string `json:"city"`
		PostalCode string `json:"postal_code"`
		Country    string `json:"country"`
	} `json:"shipping_address"`
}
