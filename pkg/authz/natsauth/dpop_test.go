package natsauth

import (
	"net/http"
	"net/http/httptest"
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

	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache(), Origin: "https://api.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	reg := authz.NewRegistry()
	e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{Validator: m.access, Registry: reg, DPoP: dp}))
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
