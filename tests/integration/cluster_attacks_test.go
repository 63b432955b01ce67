package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// workloadToken is a workload's client-credentials token from devtenant
// (client <name>-service with its dev secret): what that process holds, and
// all it needs for NATS, where the auth callout turns it into its user.
func workloadToken(t *testing.T, name string) string {
	t.Helper()
	r, err := api.TokenRequest(url.Values{
		"grant_type": {"client_credentials"}, "client_id": {name + "-service"},
		"client_secret": {name + "-service-dev-secret"}, "audience": {apiclient.Audience},
	})
	if err != nil || r.Status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("%s-service's client-credentials token: %v %d %s %s", name, err, r.Status, r.Error, r.Description)
	}
	return r.AccessToken
}

// natsConnect connects to url with tok as the CONNECT token, without
// reconnecting, its asynchronous errors (permission violations) going to the
// returned channel.
func natsConnect(url, tok, name string, opts ...nats.Option) (*nats.Conn, <-chan error, error) {
	errs := make(chan error, 256)
	opts = append([]nats.Option{nats.Token(tok), nats.Name("integration-" + name), nats.NoReconnect(),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		})}, opts...)
	nc, err := nats.Connect(url, opts...)
	return nc, errs, err
}

// natsAs connects to a NATS node of the cluster as a workload, exactly as
// that process does: with its client-credentials token, which the TTS's auth
// callout maps to the workload's user, and its inbox prefix. Its
// asynchronous errors (permission violations) go to the returned channel.
func natsAs(t *testing.T, node, user string) (*nats.Conn, <-chan error) {
	t.Helper()
	u, err := stack.natsClientURL(testCtx(t, 10*time.Second), node)
	if err != nil {
		t.Fatal(err)
	}
	nc, errs, err := natsConnect(u, workloadToken(t, user), user, nats.CustomInboxPrefix("_INBOX_"+user))
	if err != nil {
		t.Fatalf("connect to %s as %s: %v", node, user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// jsAPI sends one JetStream API request and decodes the answer into out; it
// returns the transport error (timeout, no responders) if there was one.
func jsAPI(nc *nats.Conn, subj string, req any, out any) error {
	b, _ := json.Marshal(req)
	m, err := nc.Request(subj, b, 2*time.Second)
	if err != nil {
		return err
	}
	return json.Unmarshal(m.Data, out)
}

// apiError is the error part of every JetStream API answer.
type apiError struct {
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// streamMsg is a STREAM.MSG.GET answer.
type streamMsg struct {
	apiError
	Message *struct {
		Subject string `json:"subject"`
		Seq     uint64 `json:"seq"`
		Hdrs    []byte `json:"hdrs"`
		Data    []byte `json:"data"`
	} `json:"message"`
}

// streamInfo is the part of a STREAM.INFO answer the tests read.
type streamInfo struct {
	apiError
	State struct {
		Messages uint64 `json:"messages"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"state"`
}

// headers parses a stored message's raw NATS header block.
func headers(raw []byte) (textproto.MIMEHeader, error) {
	if len(raw) == 0 {
		return textproto.MIMEHeader{}, nil
	}
	r := bufio.NewReader(bytes.NewReader(raw))
	if _, err := r.ReadString('\n'); err != nil { // NATS/1.0
		return nil, err
	}
	h, err := textproto.NewReader(r).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return nil, err
	}
	return h, nil
}

// permissionViolation waits briefly for the server to report a permission
// violation naming subj on the connection.
func permissionViolation(errs <-chan error, subj string) error {
	deadline := time.After(2 * time.Second)
	var seen []string
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), "ermissions violation") && strings.Contains(err.Error(), subj) {
				return nil
			}
			seen = append(seen, err.Error())
		case <-deadline:
			return fmt.Errorf("no permissions violation for %q reported (saw %v)", subj, seen)
		}
	}
}

// testEventsCarryNoAccessToken reads the latest order event as orders (the
// stream's owner, connected with its client-credentials token): it carries a
// transaction token and no Authorization header.
func testEventsCarryNoAccessToken(t *testing.T) {
	tok := api.Token(t, apiclient.Alice)
	o := api.PlaceOrder(t, tok, apiclient.Mugs(1))
	api.WaitInvoice(t, tok, o.ID, "open", 10*time.Second)
	nc, _ := natsAs(t, "nats-1", "orders")
	var m streamMsg
	if err := jsAPI(nc, "$JS.API.STREAM.MSG.GET.ORDERS_EVENTS", map[string]string{"last_by_subj": "orders.events.created"}, &m); err != nil {
		t.Fatalf("orders reads its own stream: %v", err)
	}
	if m.Error != nil || m.Message == nil {
		t.Fatalf("orders reads its own stream: %+v", m.Error)
	}
	h, err := headers(m.Message.Hdrs)
	if err != nil {
		t.Fatalf("stored headers %q: %v", m.Message.Hdrs, err)
	}
	if len(h.Values("Authorization")) > 0 || bytes.Contains(bytes.ToLower(m.Message.Hdrs), []byte("bearer ")) {
		t.Errorf("a stored order event carries an Authorization header or a bearer token: %q", m.Message.Hdrs)
	}
	if txn := h.Get("Txn-Token"); strings.Count(txn, ".") != 2 {
		t.Errorf("a stored order event carries no transaction token (Txn-Token %q; headers %v)", txn, keysOf(h))
	}
	if strings.Contains(string(m.Message.Data), tok) {
		t.Error("the event's payload holds alice's access token")
	}
	// Alice's access token is not in it, and what is in it is no access token:
	// every HTTP edge refuses it.
	txn := h.Get("Txn-Token")
	for _, svc := range services {
		if r := api.Call(t, http.MethodGet, svc, map[string]string{"users": "/v1/me", "orders": "/v1/orders", "billing": "/v1/invoices"}[svc], txn, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("%s accepts the stored transaction token as an access token: %s", svc, r)
		}
	}
}

func keysOf(h textproto.MIMEHeader) []string {
	var k []string
	for n := range h {
		k = append(k, n)
	}
	return k
}

// testCompromisedBilling is the cluster version of pkg/platform/mesh's
// compromised-service suite for one workload: with what a compromised
// billing holds — its client-credentials token (got from devtenant with
// billing-service's secret), which the auth callout turns into billing's
// NATS user — on the three-node cluster compose runs, an attacker cannot
// read ORDERS_EVENTS (tokens in headers), cannot create a stream that
// captures users' profile requests, and cannot publish an order event; the
// server reports each as a permission violation and the victims' state
// shows no effect. A control shows the token itself works.
func testCompromisedBilling(t *testing.T) {
	tok := api.Token(t, apiclient.Alice)
	api.PlaceOrder(t, tok, apiclient.Mugs(1)) // ORDERS_EVENTS is not empty
	owner, _ := natsAs(t, "nats-2", "orders")
	var before streamInfo
	if err := jsAPI(owner, "$JS.API.STREAM.INFO.ORDERS_EVENTS", nil, &before); err != nil || before.Error != nil || before.State.Messages == 0 {
		t.Fatalf("orders' own view of ORDERS_EVENTS: %v %+v %+v", err, before.Error, before.State)
	}

	nc, errs := natsAs(t, "nats-1", "billing")
	var own streamInfo
	if err := jsAPI(nc, "$JS.API.STREAM.INFO.BILLING_EVENTS", nil, &own); err != nil || own.Error != nil {
		t.Fatalf("control: billing cannot even read its own stream's info (%v %+v): the attacks below would prove nothing", err, own.Error)
	}

	t.Run("read ORDERS_EVENTS with STREAM.MSG.GET", func(t *testing.T) {
		for _, subj := range []string{"$JS.API.STREAM.MSG.GET.ORDERS_EVENTS", "JS.ORDERS.API.STREAM.MSG.GET.ORDERS_EVENTS",
			"$JS.API.DIRECT.GET.ORDERS_EVENTS", "JS.ORDERS.API.DIRECT.GET.ORDERS_EVENTS"} {
			for _, req := range []map[string]any{{"seq": before.State.LastSeq}, {"last_by_subj": "orders.events.created"}} {
				m, err := nc.Request(subj, mustJSON(req), 500*time.Millisecond)
				if err == nil && (m.Header.Get("Nats-Stream") != "" || !bytes.Contains(m.Data, []byte(`"error"`))) {
					t.Errorf("billing read ORDERS_EVENTS through %s: %q %v", subj, m.Data, m.Header)
				}
			}
		}
		if err := permissionViolation(errs, "$JS.API.STREAM.MSG.GET.ORDERS_EVENTS"); err != nil {
			t.Error(err)
		}
	})

	t.Run("create a stream capturing authmesh.users.profile", func(t *testing.T) {
		for _, name := range []string{"CAPTURE", "BILLING_EVENTS"} {
			cfg := map[string]any{"name": name, "subjects": []string{"authmesh.users.profile"}, "no_ack": true, "storage": "memory"}
			for _, verb := range []string{"CREATE", "UPDATE"} {
				var r apiError
				err := jsAPI(nc, "$JS.API.STREAM."+verb+"."+name, cfg, &r)
				if err == nil && r.Error == nil {
					t.Errorf("billing %sd stream %s capturing authmesh.users.profile", strings.ToLower(verb), name)
				}
			}
		}
		if err := permissionViolation(errs, "$JS.API.STREAM.CREATE.CAPTURE"); err != nil {
			t.Error(err)
		}
		// No node knows such a stream, and profile requests still reach users:
		// an order (orders asks users for the caller's address) is placed.
		for _, n := range natsNodes {
			if st, ok := jsz(t, n)["CAPTURE"]; ok {
				t.Errorf("%s has a stream CAPTURE: %+v", n, st)
			}
		}
		var own streamInfo
		if err := jsAPI(nc, "$JS.API.STREAM.INFO.BILLING_EVENTS", nil, &own); err != nil || own.Error != nil {
			t.Fatalf("billing's own stream after the attempt: %v %+v", err, own.Error)
		}
		api.PlaceOrder(t, tok, apiclient.Mugs(1))
	})

	t.Run("publish orders.events.created", func(t *testing.T) {
		var start streamInfo
		if err := jsAPI(owner, "$JS.API.STREAM.INFO.ORDERS_EVENTS", nil, &start); err != nil || start.Error != nil {
			t.Fatalf("ORDERS_EVENTS info: %v %+v", err, start.Error)
		}
		forged := nats.NewMsg("orders.events.created")
		forged.Header.Set("Nats-Msg-Id", "forged-by-billing")
		forged.Data = []byte(`{"type":"order.created","forged":true}`)
		if err := nc.PublishMsg(forged); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.RequestMsg(forged, 500*time.Millisecond); err == nil {
			t.Error("billing's publish of orders.events.created was acknowledged")
		}
		if err := permissionViolation(errs, "orders.events.created"); err != nil {
			t.Error(err)
		}
		var end streamInfo
		if err := jsAPI(owner, "$JS.API.STREAM.INFO.ORDERS_EVENTS", nil, &end); err != nil || end.Error != nil {
			t.Fatalf("ORDERS_EVENTS info: %v %+v", err, end.Error)
		}
		if end.State.LastSeq != start.State.LastSeq {
			var m streamMsg
			_ = jsAPI(owner, "$JS.API.STREAM.MSG.GET.ORDERS_EVENTS", map[string]any{"seq": end.State.LastSeq}, &m)
			if m.Message != nil && bytes.Contains(m.Message.Data, []byte("forged")) {
				t.Errorf("the forged order event is stored in ORDERS_EVENTS (seq %d)", m.Message.Seq)
			}
		}
	})

	t.Run("connect on the WebSocket listener", testWorkloadTokenOffWebSocket)
}

// testWorkloadTokenOffWebSocket: billing's token is for its own process on
// the client port; on the WebSocket listener (people's live connections)
// the callout refuses it, so a leaked workload token gets no browser-side
// foothold either.
func testWorkloadTokenOffWebSocket(t *testing.T) {
	u, err := stack.natsWSURL(testCtx(t, 10*time.Second), "nats-1")
	if err != nil {
		t.Fatal(err)
	}
	nc, _, err := natsConnect(u, workloadToken(t, "billing"), "billing-ws")
	if err == nil {
		nc.Close()
		t.Fatal("billing's client-credentials token got a WebSocket connection")
	}
	// Over WebSocket the client may see the server's close before its
	// "Authorization Violation" (a broken pipe): refused either way.
	t.Logf("billing's token on the WebSocket listener: %v", err)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
