package natsauth

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// TestDPoPBoundTokenIsExchangedNotForwarded: behind the Echo middleware,
// which verified the request's proof, a DPoP-bound token is exchanged with
// the proof's thumbprint in request_details; the message carries the
// transaction token, never the bound token.
func TestDPoPBoundTokenIsExchangedNotForwarded(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	stub := startTTS(t, nc, m.ex)
	tc := newTxnClient(t, nc, nil)
	k := authztest.NewDPoPKey(t)
	bound := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile"}, "cnf": k.Cnf()})

	e, reg := dpopEdge(t, m)
	var header string
	authz.GET(e, reg, "/v1/me", func(c echo.Context) error {
		ctx := WithOutbound(c.Request().Context(), &Outbound{Exchanger: tc, Scopes: func(string) []string { return []string{"read:profile"} }})
		msg, err := NewMsg(ctx, "authmesh.users.profile", nil)
		if err != nil {
			return err
		}
		header = msg.Header.Get(HeaderTxnToken)
		return c.NoContent(http.StatusNoContent)
	}, authz.RequireAll("read:profile").Users())

	req := httptest.NewRequest("GET", "/v1/me", nil)
	req.Header.Set("Authorization", "DPoP "+bound)
	req.Header.Set("DPoP", k.Proof(t, "GET", "https://api.example.com/v1/me", bound))
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if header == "" || header == bound {
		t.Fatalf("message token %q: want a transaction token, never the bound token", header)
	}
	if c, err := m.txn.Validate(t.Context(), header); err != nil || c.JKT != "" {
		t.Fatalf("transaction token: %+v %v", c, err)
	}
	details, _ := stub.body(t, 0)["request_details"].(map[string]any)
	if details["dpop_jkt"] != k.JKT() {
		t.Fatalf("request_details = %v, want dpop_jkt %s", details, k.JKT())
	}
}

// TestTxnClientForwardsVerifiedDPoPProof: behind the Echo middleware, the
// exchanges of one request with a DPoP-bound token (two hops, two scope
// sets, as orders' POST /v1/orders makes) carry in request_details the very
// proof the middleware verified, which a forwarded-proof check accepts for
// the token; a Bearer request's exchange carries no request_details.
func TestTxnClientForwardsVerifiedDPoPProof(t *testing.T) {
	t.Parallel()
	m, nc := newMeshOnNATS(t)
	stub := startTTS(t, nc, m.ex)
	tc := newTxnClient(t, nc, nil)
	k := authztest.NewDPoPKey(t)
	bound := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}, "cnf": k.Cnf()})
	plain := m.tenant.Token(t, authztest.Claims{"permissions": []string{"read:profile", "create:orders"}})

	e, reg := dpopEdge(t, m)
	scopes := map[string][]string{"authmesh.users.profile": {"read:profile"}, "authmesh.orders.created": {"create:orders"}}
	authz.POST(e, reg, "/v1/orders", func(c echo.Context) error {
		ctx := WithOutbound(c.Request().Context(), &Outbound{Exchanger: tc, Scopes: func(s string) []string { return scopes[s] }})
		for _, subj := range []string{"authmesh.users.profile", "authmesh.orders.created"} {
			if _, err := NewMsg(ctx, subj, nil); err != nil {
				return err
			}
		}
		return c.NoContent(http.StatusNoContent)
	}, authz.RequireAll("read:profile").Users())

	proof := k.Proof(t, "POST", "https://api.example.com/v1/orders", bound)
	req := httptest.NewRequest("POST", "/v1/orders", nil)
	req.Header.Set("Authorization", "DPoP "+bound)
	req.Header.Set("DPoP", proof)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || stub.requests.Load() != 2 {
		t.Fatalf("%d %s, %d exchanges", rec.Code, rec.Body, stub.requests.Load())
	}
	check, err := authz.NewForwardedProofVerifier(authz.ForwardedProofConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		details, _ := stub.body(t, i)["request_details"].(map[string]any)
		got, _ := details["dpop_proof"].(string)
		if got != proof || details["dpop_jkt"] != k.JKT() {
			t.Fatalf("exchange %d: request_details without the verified proof and its jkt (keys %v)", i, detailKeys(details))
		}
		if _, err := check.Verify(got, k.JKT(), bound); err != nil {
			t.Fatalf("exchange %d: the forwarded proof does not verify: %v", i, err)
		}
	}

	req = httptest.NewRequest("POST", "/v1/orders", nil)
	req.Header.Set("Authorization", "Bearer "+plain)
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || stub.requests.Load() != 4 {
		t.Fatalf("Bearer: %d %s, %d exchanges", rec.Code, rec.Body, stub.requests.Load())
	}
	for i := 2; i < 4; i++ {
		if d, ok := stub.body(t, i)["request_details"]; ok {
			t.Fatalf("Bearer exchange %d has request_details (keys %v)", i, detailKeys(d.(map[string]any)))
		}
	}
}

// dpopEdge is an HTTP edge of https://api.example.com behind the Echo
// middleware, accepting DPoP with m's access tokens.
func dpopEdge(t *testing.T, m *testMesh) (*echo.Echo, *authz.Registry) {
	t.Helper()
	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), Origin: "https://api.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: m.access, Registry: reg, DPoP: dp}))
	return e, reg
}

func detailKeys(m map[string]any) []string { return slices.Collect(maps.Keys(m)) }
