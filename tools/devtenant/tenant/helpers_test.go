package tenant

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

const (
	testIssuer = "http://localhost:8400/"
	apiAud     = "https://api.authmesh.dev"
	mgmtAud    = "http://localhost:8400/api/v2/"
	aliceID    = "auth0|6553da60a54af58e29493991"
	bobID      = "auth0|6553da60a54af58e29493992"
)

var (
	testTenantFile = filepath.Join("..", "..", "..", "deploy", "tenant.yaml")
	devDir         = filepath.Join("..", "..", "..", "deploy", "dev")
)

// seedKeys generates one key file per test binary: RSA generation under -race
// is slow, and most tests only need some valid keys, not fresh ones.
var seedKeys = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "devtenant-seed-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if _, err := openKeyStore(dir, nowFunc()); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, keysFileName))
})

type testTenant struct {
	srv     *Server
	ts      *httptest.Server
	dataDir string
	logs    *authztest.LogBuffer
}

// newTenant starts a tenant served from an httptest server on a random port,
// while its issuer stays http://localhost:8400/. Its data dir starts with
// the seed keys unless mutate names another.
func newTenant(t *testing.T, mutate func(*Config)) *testTenant {
	t.Helper()
	dataDir := t.TempDir()
	seed, err := seedKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, keysFileName), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &authztest.LogBuffer{}
	cfg := Config{Issuer: testIssuer, TenantFile: testTenantFile, DevDir: devDir, DataDir: dataDir,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close() })
	return &testTenant{srv: srv, ts: ts, dataDir: cfg.DataDir, logs: logs}
}

func nowFunc() func() time.Time { return time.Now }

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (tt *testTenant) do(t *testing.T, method, path, contentType string, body io.Reader, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, tt.ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (tt *testTenant) postForm(t *testing.T, v url.Values) response {
	t.Helper()
	return tt.do(t, http.MethodPost, "/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(v.Encode()), nil)
}

func (tt *testTenant) mgmt(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	hdr := map[string]string{}
	if token != "" {
		hdr["Authorization"] = "Bearer " + token
	}
	return tt.do(t, method, path, "application/json", rd, hdr)
}

func passwordForm(user, scope string) url.Values {
	return url.Values{"grant_type": {"password"}, "username": {user}, "password": {"dev-password"},
		"client_id": {"authmesh-cli"}, "audience": {apiAud}, "scope": {scope}}
}

func ccForm(client, audience string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {client},
		"client_secret": {client + "-dev-secret"}, "audience": {audience}}
}

func (tt *testTenant) accessToken(t *testing.T, v url.Values) string {
	t.Helper()
	r := tt.postForm(t, v)
	if r.status != http.StatusOK {
		t.Fatalf("token request: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

// decodeJWT returns the raw JSON header and payload, to check JSON types exactly.
func decodeJWT(t *testing.T, tok string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact token: %d parts", len(parts))
	}
	var out [2]map[string]any
	for i := range 2 {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out[0], out[1]
}

func (tt *testTenant) jwks(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	r := tt.do(t, http.MethodGet, "/.well-known/jwks.json", "", nil, nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.raw, &set); err != nil {
		t.Fatal(err)
	}
	return set
}

// verifyWithJWKS checks the signature against the served JWKS, like a resource server would.
func (tt *testTenant) verifyWithJWKS(t *testing.T, tok string) error {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return err
	}
	set := tt.jwks(t)
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		return errKidNotInJWKS
	}
	var c map[string]any
	return parsed.Claims(keys[0].Key, &c)
}

var errKidNotInJWKS = errorString("kid not in JWKS")

type errorString string

func (e errorString) Error() string { return string(e) }
