package natsauth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
)

// failingVerifier refuses every token with the error named by the token.
type failingVerifier map[string]error

func (f failingVerifier) Validate(_ context.Context, tok string) (*authz.Claims, error) {
	return nil, f[tok]
}

func (f failingVerifier) ValidateAt(ctx context.Context, tok string, _ time.Time) (*authz.Claims, error) {
	return f.Validate(ctx, tok)
}

// TestDenialsSameOverHTTPAndNATS: an authz failure is answered with the
// same status over NATS (Nats-Service-Error-Code) as over HTTP
// (authz.AnswerOf, what the Echo middleware and pkg/platform's error handler
// write), and a NATS denial handed on to an HTTP caller (orders returning
// users' answer) is answered as the original failure would have been.
func TestDenialsSameOverHTTPAndNATS(t *testing.T) {
	t.Parallel()
	nc, _ := connect(t, startNATS(t))
	fails := failingVerifier{
		"invalid":    &authz.Error{Code: authz.CodeInvalidToken, Reason: "expired", Description: "the token has expired"},
		"scope":      &authz.Error{Code: authz.CodeInsufficientScope, Reason: authz.ReasonMissingPermission, Needed: []string{"read:profile"}},
		"kind":       &authz.Error{Code: authz.CodeInsufficientScope, Reason: authz.ReasonUsersOnly, Description: "only users may do this"},
		"keys":       &authz.Error{Code: authz.CodeKeysUnavailable, Reason: "keys_unavailable"},
		"revocation": &authz.Error{Code: authz.CodeKeysUnavailable, Reason: "revocations_unavailable", Description: "the revocation list is not loaded yet"},
		"no_policy":  authz.ErrNoPolicy,
	}
	svc := newTestService(t, nc, "denials", fails)
	if err := svc.AddEndpoint("x", "denials.x", authz.Authenticated().Users(), func(context.Context, micro.Request) {
		t.Error("handler ran for a denied request")
	}); err != nil {
		t.Fatal(err)
	}
	cases := map[string]error{"": authz.ErrMissingToken}
	for tok, err := range fails {
		cases[tok] = err
	}
	for tok, want := range cases {
		t.Run(string(authz.CodeOf(want))+"/"+tok, func(t *testing.T) {
			msg := nats.NewMsg("denials.x")
			if tok != "" {
				msg.Header.Set(HeaderTxnToken, tok)
			}
			reply, err := nc.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var se *ServiceError
			if !errors.As(replyError("denials.x", reply), &se) {
				t.Fatalf("no service error in the reply %v", reply.Header)
			}
			overHTTP := authz.AnswerOf(want)
			if se.Code != overHTTP.Status {
				t.Errorf("NATS status %d, HTTP status %d", se.Code, overHTTP.Status)
			}
			if authz.CodeOf(se) != authz.CodeOf(want) {
				t.Errorf("NATS code %q, want %q", authz.CodeOf(se), authz.CodeOf(want))
			}
			handedOn := authz.AnswerOf(se)
			if handedOn.Status != overHTTP.Status || handedOn.Body.Error != overHTTP.Body.Error {
				t.Errorf("NATS denial answered over HTTP as %d %s, the failure itself as %d %s",
					handedOn.Status, handedOn.Body.Error, overHTTP.Status, overHTTP.Body.Error)
			}
		})
	}
}
