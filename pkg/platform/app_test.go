package platform

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// issuer is an Auth0-shaped tenant served by httptest: its JWKS at every
// path but /oauth/token, which grants the local tenant's clients
// ("<svc>-service", "<svc>-service-dev-secret") client-credentials tokens,
// as the service's NATS connection needs one. Tokens are signed in the test.
type issuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
	iss string
	// grants counts the client-credentials tokens issued.
	grants atomic.Int64
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	k := authztest.NewRSAKey(t)
	is := &issuer{key: k}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("POST /oauth/token", is.grant)
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	is.iss = is.srv.URL + "/"
	return is
}

// grant answers the client-credentials grant as Auth0 does
// (client_secret_post, the audience parameter).
func (is *issuer) grant(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	client := r.PostFormValue("client_id")
	switch {
	case r.PostFormValue("grant_type") != "client_credentials":
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"unsupported_grant_type"}`)
		return
	case !strings.HasSuffix(client, "-service") || r.PostFormValue("client_secret") != client+"-dev-secret":
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"access_denied","error_description":"Unauthorized"}`)
		return
	case r.PostFormValue("audience") != DefaultAudience:
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":"access_denied","error_description":"Service not enabled within domain"}`)
		return
	}
	const life = time.Hour
	tok, err := is.sign(map[string]any{
		"sub": client + "@clients", "azp": client, "gty": "client-credentials", "scope": "",
	}, life)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	is.grants.Add(1)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(life.Seconds()),
	})
}

// m2mToken is client's client-credentials token, as grant issues it.
func (is *issuer) m2mToken(t testing.TB, client string) string {
	t.Helper()
	tok, err := is.sign(map[string]any{"sub": client + "@clients", "azp": client, "gty": "client-credentials", "scope": ""}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sign signs claims with the issuer's iss, aud, iat and exp (lifetime from now).
func (is *issuer) sign(claims map[string]any, lifetime time.Duration) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	c := map[string]any{"iss": is.iss, "aud": DefaultAudience, "iat": now.Unix(), "exp": now.Add(lifetime).Unix()}
	maps.Copy(c, claims)
	return jwt.Signed(sig).Claims(c).Serialize()
}

func (is *issuer) token(t *testing.T, sub string, perms ...string) string {
	t.Helper()
	tok, err := is.sign(map[string]any{
		"sub": sub, "azp": "authmesh-cli", "scope": "openid", "permissions": perms, "gty": "password",
	}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// validator verifies the issuer's access tokens (the callout's).
func (is *issuer) validator(t testing.TB) *authz.Validator {
	t.Helper()
	return meshtest.Validator(t, is.srv.URL, is.iss, DefaultAudience)
}

// billingConfig is billing's configuration against the issuer and, unless
// extra names one, a fresh NATS server whose callout trusts the issuer;
// extra adds or overrides variables.
func (is *issuer) billingConfig(t *testing.T, extra map[string]string) Config {
	t.Helper()
	env := map[string]string{"AUTH0_ISSUER": is.iss, "AUTH0_JWKS_URL": is.srv.URL}
	maps.Copy(env, extra)
	if env["BILLING_NATS_URL"] == "" {
		env["BILLING_NATS_URL"] = is.startNATS(t).ClientURL()
	}
	cfg, err := LoadConfig("billing", envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startNATS runs the mesh's NATS server with the callout trusting the
// issuer: services connect with the issuer's client-credentials tokens.
func (is *issuer) startNATS(t testing.TB) *server.Server {
	t.Helper()
	s := meshtest.StartWith(t, meshtest.Options{
		Validator: is.validator(t),
		Token:     func(tb testing.TB, workload string) string { return is.m2mToken(tb, workload+"-service") },
	})
	// The mesh's accounts: billing reads the revocations the users account
	// exports, as in production.
	_, js := meshtest.Connect(t, s, mesh.Users)
	if _, err := natsauth.NewRevocationStore(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	return s
}

var errGone = errors.New("widget not found")

// newServedApp is New for a test that serves HTTP: on a loopback listener,
// logging nowhere unless opts has a logger. It returns the app and the base
// URL it will serve once run.
func newServedApp(t *testing.T, ctx context.Context, cfg Config, opts Options) (*App, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := New(ctx, cfg, opts)
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	return a, "http://" + ln.Addr().String()
}

func TestAppServesThroughTheSharedChain(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	natsURL := is.startNATS(t).ClientURL()
	tts := authztest.NewTxnIssuer(t)
	cfg := is.billingConfig(t, map[string]string{"BILLING_NATS_URL": natsURL, "AUTHMESH_TTS_JWKS_URL": tts.JWKSURL()})
	logs := &authztest.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app, base := newServedApp(t, ctx, cfg, Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Errors: []ErrorMapping{{Target: errGone, Status: http.StatusNotFound, Code: "not_found"}},
	})
	release := make(chan struct{})
	app.Route(http.MethodGet, "/v1/widgets/:id", authz.RequireAll("read:widgets").Users(), func(c echo.Context) error {
		switch c.Param("id") {
		case "gone":
			return errGone
		case "boom":
			return errors.New("kv: connection to 10.0.0.7 refused")
		case "panic":
			panic("secret internal state")
		case "slow":
			<-release
		}
		cl, _ := authz.ClaimsFromEcho(c)
		return c.JSON(http.StatusOK, map[string]string{"sub": cl.Subject, "rid": RequestIDFromContext(c.Request().Context())})
	})
	app.Route(http.MethodPost, "/v1/widgets", authz.RequireAll("read:widgets").Users(), func(c echo.Context) error {
		var in struct {
			Name string `json:"name"`
			Qty  int    `json:"qty"`
		}
		if err := BindJSON(c, &in); err != nil {
			return err
		}
		v := Validation{}
		v.Check(in.Qty >= 1 && in.Qty <= 100, "qty", "must be between 1 and 100")
		if err := v.Err(); err != nil {
			return err
		}
		return c.NoContent(http.StatusCreated)
	})

	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(ctx) }()
	waitReady(t, base)
	if is.grants.Load() == 0 {
		t.Fatal("ready without a client-credentials token: how did NATS let billing in?")
	}

	good := is.token(t, "auth0|alice", "read:widgets")
	weak := is.token(t, "auth0|bob")
	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
		wwwAuth                         string
	}{
		{"ok", "GET", "/v1/widgets/1", good, "", 200, "", ""},
		{"no token", "GET", "/v1/widgets/1", "", "", 401, "missing_token", `Bearer realm="authmesh"`},
		{"garbage token", "GET", "/v1/widgets/1", "abc.def.ghi", "", 401, "invalid_token", `error="invalid_token"`},
		{"missing permission", "GET", "/v1/widgets/1", weak, "", 403, "insufficient_scope", `scope="read:widgets"`},
		{"domain sentinel", "GET", "/v1/widgets/gone", good, "", 404, "not_found", ""},
		{"internal hidden", "GET", "/v1/widgets/boom", good, "", 500, "internal", ""},
		{"panic recovered", "GET", "/v1/widgets/panic", good, "", 500, "internal", ""},
		{"unknown route", "GET", "/nope", "", "", 404, "not_found", ""},
		{"malformed json", "POST", "/v1/widgets", good, `{"name":`, 400, "malformed_json", ""},
		{"wrong type", "POST", "/v1/widgets", good, `{"qty":"x"}`, 422, "validation_failed", ""},
		{"unknown field", "POST", "/v1/widgets", good, `{"qtty":1}`, 422, "validation_failed", ""},
		{"validation", "POST", "/v1/widgets", good, `{"qty":101}`, 422, "validation_failed", ""},
		{"valid body", "POST", "/v1/widgets", good, `{"qty":3}`, 201, "", ""},
		{"body too large", "POST", "/v1/widgets", good, `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "request_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, raw)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
			if tt.wwwAuth != "" && !strings.Contains(resp.Header.Get("WWW-Authenticate"), tt.wwwAuth) {
				t.Errorf("WWW-Authenticate %q, want %q", resp.Header.Get("WWW-Authenticate"), tt.wwwAuth)
			}
			if tt.wwwAuth != "" {
				// authz's answer, written once (the middleware's denial goes
				// through the error handler, which renders it with authz):
				// the Bearer challenge, then on a 401 DPoP's (on by default).
				ch := resp.Header.Values("WWW-Authenticate")
				want := 1
				if tt.status == http.StatusUnauthorized {
					want = 2
				}
				if len(ch) != want || !strings.HasPrefix(ch[0], "Bearer ") || (want == 2 && !strings.HasPrefix(ch[1], "DPoP ")) || resp.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("WWW-Authenticate %q, Cache-Control %q; want the Bearer challenge (and DPoP's on a 401) once, and no-store", ch, resp.Header.Get("Cache-Control"))
				}
			}
			if tt.code == "" {
				return
			}
			var body map[string]any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("body %s: %v", raw, err)
			}
			if body["error"] != tt.code || body["message"] == "" {
				t.Errorf("body %s, want error %q and a message", raw, tt.code)
			}
			if strings.Contains(string(raw), "10.0.0.7") || strings.Contains(string(raw), "secret internal") {
				t.Errorf("internals leaked: %s", raw)
			}
			if tt.code == "validation_failed" {
				if f, ok := body["fields"].(map[string]any); !ok || len(f) == 0 {
					t.Errorf("no fields in %s", raw)
				}
			}
		})
	}

	t.Run("metrics by route", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`http_requests_total{code="200",method="GET",route="/v1/widgets/:id"}`,
			`http_requests_total{code="404",method="GET",route="unmatched"}`,
			`billing_authz_decisions_total`, `nats_connected 1`,
		} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("logs: one line per request, subject hashed, no token", func(t *testing.T) {
		out := logs.String()
		if strings.Contains(out, good) || strings.Contains(out, "auth0|alice") {
			t.Fatal("log holds a token or a raw subject")
		}
		if !strings.Contains(out, SubjectHash("auth0|alice")) || !strings.Contains(out, `"route":"/v1/widgets/:id"`) {
			t.Fatalf("log lacks sub_hash or route:\n%s", out)
		}
		if n := strings.Count(out, "kv: connection to 10.0.0.7 refused"); n != 1 {
			t.Errorf("internal error logged %d times, want once", n)
		}
		// The middleware's denials pass through the error handler: their
		// request lines carry the error code and authz's reason.
		for _, want := range []string{
			`"status":401,"latency_ms"`, `"error_code":"missing_token"`,
			`"error_code":"invalid_token","authz_reason":"malformed"`,
			`"error_code":"insufficient_scope","authz_reason":"missing_permission"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %s:\n%s", want, out)
			}
		}
	})

	t.Run("graceful shutdown finishes in-flight requests", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/v1/widgets/slow", nil)
		req.Header.Set("Authorization", "Bearer "+good)
		got := make(chan int, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				got <- -1
				return
			}
			resp.Body.Close()
			got <- resp.StatusCode
		}()
		time.Sleep(200 * time.Millisecond)
		cancel()
		time.Sleep(100 * time.Millisecond)
		close(release)
		if code := <-got; code != 200 {
			t.Errorf("in-flight request got %d", code)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		if !app.NATS.IsClosed() {
			t.Error("NATS not drained and closed")
		}
	})
}

func TestRunRefusesRouteWithoutPolicy(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.billingConfig(t, nil)
	for name, add := range map[string]func(a *App){
		"behind its back": func(a *App) { a.Echo.GET("/v1/sneaky", func(c echo.Context) error { return nil }) },
		"zero policy": func(a *App) {
			a.Route(http.MethodGet, "/v1/zero", authz.Policy{}, func(c echo.Context) error { return nil })
		},
	} {
		t.Run(name, func(t *testing.T) {
			app, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			add(app)
			err = app.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), "/v1/") {
				t.Fatalf("Run = %v, want a refusal naming the route", err)
			}
		})
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready: %s", raw)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRunRefusesPermissionTheTenantLacks(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	tenantFile := filepath.Join(t.TempDir(), "tenant.yaml")
	tenant := "resourceServers:\n  - name: api\n    identifier: " + DefaultAudience + "\n    scopes:\n      - value: read:invoices\n"
	if err := os.WriteFile(tenantFile, []byte(tenant), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := is.billingConfig(t, map[string]string{"AUTH0_TENANT_FILE": tenantFile})
	app, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ok := func(c echo.Context) error { return nil }
	app.Route(http.MethodGet, "/v1/invoices", authz.RequireAll("read:invoices").Users(), ok)
	app.Route(http.MethodPost, "/v1/invoices/:id/pay", authz.RequireAll("pay:everything").Users(), ok)
	app.DeclarePolicy("NATS endpoint billing.void", authz.RequireAll("read:invoices", "void:everything").Users())
	err = app.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "pay:everything") || strings.Contains(err.Error(), "read:invoices") ||
		!strings.Contains(err.Error(), `NATS endpoint billing.void uses permission "void:everything"`) {
		t.Fatalf("Run = %v, want a refusal naming only pay:everything and the endpoint's void:everything", err)
	}
}

// TestReadyzNamesChecksNotErrors: /readyz says which check failed, but the
// error's text — URLs, DNS names, dial errors — goes to the log, once per
// change, never into the answer.
func TestReadyzNamesChecksNotErrors(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.billingConfig(t, nil)
	logs := &authztest.LogBuffer{}
	app, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.NATS.Close)
	const secretText = `Get "http://devtenant.internal:8400/.well-known/jwks.json": dial tcp 10.1.2.3:8400: lookup devtenant.internal: no such host`
	var broken atomic.Bool
	broken.Store(true)
	app.AddReadyCheck("billing-store", func(context.Context) error {
		if broken.Load() {
			return errors.New(secretText)
		}
		return nil
	})
	probe := func() (int, map[string]any, string) {
		rec := httptest.NewRecorder()
		app.Echo.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("readyz body %q: %v", rec.Body, err)
		}
		return rec.Code, body, rec.Body.String()
	}
	for range 3 {
		code, body, raw := probe()
		checks, _ := body["checks"].(map[string]any)
		if code != http.StatusServiceUnavailable || checks["billing-store"] != "failed" {
			t.Fatalf("readyz = %d %s, want 503 naming billing-store as failed", code, raw)
		}
		for _, leak := range []string{"devtenant.internal", "10.1.2.3", "dial tcp", "no such host", "http://", "jwks"} {
			if strings.Contains(raw, leak) {
				t.Fatalf("readyz answer %s leaks %q", raw, leak)
			}
		}
		for name, v := range checks {
			if v != "ok" && v != "failed" {
				t.Errorf("check %s answers %q: want ok or failed", name, v)
			}
		}
	}
	if n := strings.Count(logs.String(), "lookup devtenant.internal"); n != 1 {
		t.Errorf("the failing check's error was logged %d times over three probes, want once:\n%s", n, logs)
	}
	broken.Store(false)
	probe()
	probe()
	n := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "readiness check passing again") && strings.Contains(line, `"check":"billing-store"`) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("billing-store's recovery was logged %d times, want once:\n%s", n, logs)
	}
}
