package natsauth

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
)

// requestIDFormat is NewRequestID's one format.
var requestIDFormat = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestAcceptRequestID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"req-123", "r", "A.b_c:d-0", strings.Repeat("x", 64), NewRequestID(), newUUID()} {
		if got := AcceptRequestID(id); got != id {
			t.Errorf("valid %q replaced by %q", id, got)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", 65), "a b", "x\ny", `{"level":"ERROR"}`, "é", "id;drop", "a/b"} {
		if got := AcceptRequestID(id); !requestIDFormat.MatchString(got) {
			t.Errorf("invalid %q answered with %q, not a fresh id", id, got)
		}
	}
	if a, b := NewRequestID(), NewRequestID(); a == b {
		t.Errorf("two fresh ids are both %s", a)
	}
}

// TestRequestIDOverNATS: a micro handler's context, and every message it
// sends, carry the inbound X-Request-Id when it is valid; an invalid,
// oversized or missing one is replaced by a fresh id, never echoed. A
// message sent with no request id in its context gets a fresh one, in the
// same format as the HTTP edge's.
func TestRequestIDOverNATS(t *testing.T) {
	t.Parallel()
	nc, _ := connect(t, startNATS(t))
	svc := newTestService(t, nc, "rid", failingVerifier{})
	type seen struct{ Handler, Onward string }
	if err := svc.AddEndpoint("echo", "rid.echo", authz.Public(), func(ctx context.Context, req micro.Request) {
		id, _ := RequestIDFromContext(ctx)
		onward, err := NewMsg(ctx, "rid.onward", nil)
		if err != nil {
			_ = req.Error("500", err.Error(), nil)
			return
		}
		_ = req.RespondJSON(seen{Handler: id, Onward: onward.Header.Get(HeaderRequestID)})
	}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("r", 65)
	for name, inbound := range map[string]string{
		"valid":     "req-123",
		"a UUID":    "0b6a1c2e-8f0d-4a5b-9c3e-7d1f2a3b4c5d",
		"oversized": long,
		"space":     "a b",
		"json":      `{"level":"ERROR"}`,
		"non-ASCII": "réq",
		"missing":   "",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			msg := nats.NewMsg("rid.echo")
			if inbound != "" {
				msg.Header.Set(HeaderRequestID, inbound)
			}
			reply, err := nc.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var got seen
			if err := json.Unmarshal(reply.Data, &got); err != nil {
				t.Fatalf("reply %q: %v", reply.Data, err)
			}
			if got.Onward != got.Handler {
				t.Errorf("handler saw %q, its message carries %q", got.Handler, got.Onward)
			}
			if AcceptRequestID(inbound) == inbound {
				if got.Handler != inbound {
					t.Errorf("valid %q replaced by %q", inbound, got.Handler)
				}
				return
			}
			if !requestIDFormat.MatchString(got.Handler) {
				t.Errorf("invalid %q answered with %q, not a fresh id", inbound, got.Handler)
			}
		})
	}
	t.Run("fresh context", func(t *testing.T) {
		t.Parallel()
		msg, err := NewMsg(context.Background(), "s", nil)
		if err != nil {
			t.Fatal(err)
		}
		if id := msg.Header.Get(HeaderRequestID); !requestIDFormat.MatchString(id) {
			t.Errorf("fresh request id %q", id)
		}
		bad, err := NewMsg(WithRequestID(context.Background(), "a b"), "s", nil)
		if err != nil {
			t.Fatal(err)
		}
		if id := bad.Header.Get(HeaderRequestID); !requestIDFormat.MatchString(id) {
			t.Errorf("an invalid id put in the context went out as %q", id)
		}
	})
}
