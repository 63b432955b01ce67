package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// failingVerifier refuses every token with the error named by the token.
type failingVerifier map[string]error

func (f failingVerifier) Validate(_ context.Context, tok string) (*authz.Claims, error) {
	return nil, f[tok]
}

func (f failingVerifier) ValidateAt(ctx context.Context, tok string, _ time.Time) (*authz.Claims, error) {
	return f.Validate(ctx, tok)
}

// notLoaded is a revocation list still loading.
type notLoaded struct{}

func (notLoaded) RevokedAt(string) (time.Time, bool) { return time.Time{}, false }
func (notLoaded) Ready() error                       { return errors.New("loading") }

// denialEdge is an HTTP edge behind the real Echo middleware, answered by
// Echo's default error handler, that keeps the error of its last denial
// (the middleware's *echo.HTTPError carries the *authz.Error as Internal).
type denialEdge struct {
	e      *echo.Echo
	denied error
}

func newDenialEdge(t *testing.T, cfg authz.MiddlewareConfig) *denialEdge {
	t.Helper()
	d := &denialEdge{e: echo.New()}
	cfg.Registry = authz.NewRegistry()
	d.e.Use(authz.MiddlewareWithConfig(cfg))
	d.e.HTTPErrorHandler = func(err error, c echo.Context) {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			d.denied = he.Internal
		}
		d.e.DefaultHTTPErrorHandler(err, c)
	}
	ok := func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	authz.GET(d.e, cfg.Registry, "/x", ok, authz.RequireAll("read:profile").Users())
	d.e.GET("/undeclared", ok)
	return d
}

// TestDenialsSameOverHTTPAndNATS: every kind of authorization failure is
// answered with the same status and code over NATS (Nats-Service-Error-Code,
// the description's "<code>: ") as over HTTP, where the real Echo middleware
// refuses the request; and a NATS denial handed on to an HTTP caller (orders
// returning users' answer) is answered as the failure itself was.
//
// Each failure is provoked over HTTP, and the NATS service is refused with
// the very error the middleware denied with. A plain error (not an
// *authz.Error) cannot come out of authz.Validator, which wraps every
// failure, but can out of natsauth's Verifier, an interface: its HTTP answer
// is AnswerOf's, which the middleware also writes for one.
func TestDenialsSameOverHTTPAndNATS(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), Origin: "https://api.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	nonces, err := authz.NewDPoPNonces([]byte(strings.Repeat("k", 32)), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	withNonce, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), Origin: "https://api.example.com", Nonces: nonces})
	if err != nil {
		t.Fatal(err)
	}
	edge := newDenialEdge(t, authz.MiddlewareConfig{Validator: m.access, DPoP: dp})
	nonceEdge := newDenialEdge(t, authz.MiddlewareConfig{Validator: m.access, DPoP: withNonce})
	loadingEdge := newDenialEdge(t, authz.MiddlewareConfig{Validator: newValidator(t, m.tenant, authz.WithRevocations(notLoaded{}))})

	user := m.tenant.Token(t, nil)
	k := authztest.NewDPoPKey(t)
	bound := m.tenant.Token(t, authztest.Claims{"cnf": k.Cnf()})
	withToken := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set(echo.HeaderAuthorization, "Bearer "+tok) }
	}
	dpopWith := func(proof string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set(echo.HeaderAuthorization, "DPoP "+bound)
			r.Header.Set(authz.HeaderDPoP, proof)
		}
	}
	cases := []struct {
		name     string
		edge     *denialEdge
		path     string
		req      func(*http.Request)
		plain    error // instead of a request: an error only a Verifier returns
		handedOn bool  // ServiceError reads the code back (a refusal of the message's token)
		want     authz.Code
	}{
		{name: "missing token", edge: edge, path: "/x", req: func(*http.Request) {}, handedOn: true, want: authz.CodeMissingToken},
		{name: "not a JWT", edge: edge, path: "/x", req: withToken("not-a-jwt"), handedOn: true, want: authz.CodeInvalidToken},
		{name: "expired", edge: edge, path: "/x", req: withToken(m.tenant.Token(t, authztest.Claims{"exp": time.Now().Add(-time.Hour).Unix()})),
			handedOn: true, want: authz.CodeInvalidToken},
		{name: "missing permission", edge: edge, path: "/x", req: withToken(m.tenant.Token(t, authztest.Claims{"permissions": []string{}})),
			handedOn: true, want: authz.CodeInsufficientScope},
		{name: "kind refused", edge: edge, path: "/x", req: withToken(m.tenant.M2MToken(t, "billing-service", "read:profile")),
			handedOn: true, want: authz.CodeInsufficientScope},
		{name: "no policy", edge: edge, path: "/undeclared", req: withToken(user), handedOn: true, want: authz.CodeNoPolicy},
		{name: "revocations loading", edge: loadingEdge, path: "/x", req: withToken(user), handedOn: true, want: authz.CodeKeysUnavailable},
		{name: "plain error", plain: errors.New("verifier bug"), handedOn: true, want: authz.CodeInvalidToken},
		{name: "two Authorization headers", edge: edge, path: "/x", req: func(r *http.Request) {
			r.Header.Add(echo.HeaderAuthorization, "Bearer "+user)
			r.Header.Add(echo.HeaderAuthorization, "Bearer "+user)
		}, want: authz.CodeInvalidRequest},
		{name: "DPoP proof for another request", edge: edge, path: "/x",
			req: dpopWith(k.Proof(t, "POST", "https://api.example.com/x", bound)), want: authz.CodeInvalidDPoPProof},
		{name: "DPoP proof without the nonce", edge: nonceEdge, path: "/x",
			req: dpopWith(k.Proof(t, "GET", "https://api.example.com/x", bound)), want: authz.CodeUseDPoPNonce},
	}

	fails := failingVerifier{}
	svc := newTestService(t, nc, "denials", fails)
	if err := svc.AddEndpoint("x", "denials.x", authz.Authenticated().Users(), func(context.Context, micro.Request) {
		t.Error("handler ran for a denied request")
	}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		// Serial: an edge keeps only its last denial.
		t.Run(tc.name, func(t *testing.T) {
			overHTTP, denied := authz.AnswerOf(tc.plain), tc.plain
			if tc.plain == nil {
				r := httptest.NewRequest(http.MethodGet, tc.path, nil)
				tc.req(r)
				rec := httptest.NewRecorder()
				tc.edge.e.ServeHTTP(rec, r)
				overHTTP = authz.Answer{Status: rec.Code}
				if err := json.Unmarshal(rec.Body.Bytes(), &overHTTP.Body); err != nil {
					t.Fatalf("HTTP body %q: %v", rec.Body, err)
				}
				denied = tc.edge.denied
			}
			if want := authz.AnswerOf(&authz.Error{Code: tc.want}); overHTTP.Status != want.Status || overHTTP.Body.Error != want.Body.Error {
				t.Fatalf("HTTP answered %d %s, want %d %s", overHTTP.Status, overHTTP.Body.Error, want.Status, want.Body.Error)
			}

			msg := nats.NewMsg("denials.x")
			if tc.want != authz.CodeMissingToken {
				tok := "case-" + string(rune('a'+i))
				fails[tok] = denied
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
			code, _, _ := strings.Cut(se.Description, ": ")
			if se.Code != overHTTP.Status || code != overHTTP.Body.Error {
				t.Errorf("NATS answered %d %q, HTTP %d %s", se.Code, se.Description, overHTTP.Status, overHTTP.Body.Error)
			}
			if !tc.handedOn {
				if se.AuthCode != "" {
					t.Errorf("NATS %s read back as the authz code %s", code, se.AuthCode)
				}
				return
			}
			if se.AuthCode != tc.want {
				t.Errorf("NATS code read back as %q, want %q", se.AuthCode, tc.want)
			}
			handedOn := authz.AnswerOf(se)
			if handedOn.Status != overHTTP.Status || handedOn.Body.Error != overHTTP.Body.Error {
				t.Errorf("NATS denial answered over HTTP as %d %s, the failure itself as %d %s",
					handedOn.Status, handedOn.Body.Error, overHTTP.Status, overHTTP.Body.Error)
			}
		})
	}
}
