package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
	"github.com/authmesh/authmesh/services/tts/ttstest"
)

const audience = ttstest.Audience

// fixture is the stack the TTS stands on (the mesh's real accounts and
// permissions: the TTS in its own account, reached through the import the
// services have), with a connection as orders: exchanges are asked for as
// orders asks.
type fixture struct {
	*ttstest.Stack
	nc *nats.Conn
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	st := ttstest.NewStack(t, ttstest.StackConfig{})
	nc, _ := meshtest.Connect(t, st.NATS, "orders")
	return &fixture{Stack: st, nc: nc}
}

func (f *fixture) start(t testing.TB, keysFile string) *ttstest.TTS {
	env := map[string]string{}
	if keysFile != "" {
		env["TTS_KEYS_FILE"] = keysFile
	}
	return f.StartTTS(t, env)
}

func (f *fixture) client(t testing.TB, client string) *natsauth.TxnClient {
	t.Helper()
	return f.TxnClient(t, f.nc, client)
}

var txnValidator = ttstest.TxnValidator

// TestExchangeOverNATS: the real service, reached as the services reach it.
func TestExchangeOverNATS(t *testing.T) {
	f := newFixture(t)
	tts := f.start(t, "")
	alice := f.UserToken(t, "alice@authmesh.dev", "openid")
	orders := f.client(t, "orders-service")
	tok, err := orders.Exchange(context.Background(), alice, []string{"read:profile", "create:orders"})
	if err != nil {
		t.Fatal(err)
	}
	v := txnValidator(t, tts.JWKSURL)
	c, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Subject, "auth0|") || c.RequestingWorkload != "orders-service" || !c.HasPermission("create:orders") {
		t.Fatalf("claims %+v", c)
	}
	// The HTTP edge's validator refuses it: a transaction token is no access token.
	kp, _ := authz.NewKeyProvider(authz.WithJWKSURL(f.JWKSURL))
	edge, _ := authz.NewValidator(kp, authz.WithIssuers(f.Issuer), authz.WithAudiences(audience))
	if _, err := edge.Validate(context.Background(), tok); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("the HTTP edge accepted a transaction token: %v", err)
	}
	// Refusals come back as authz codes.
	billing := f.client(t, "billing-service")
	if _, err := billing.Exchange(context.Background(), alice, []string{"read:profile"}); authz.CodeOf(err) != authz.CodeInsufficientScope {
		t.Fatalf("billing asking for read:profile: %v", err)
	}
	if _, err := orders.Exchange(context.Background(), "garbage.token.here", []string{"read:profile"}); authz.CodeOf(err) != authz.CodeInvalidToken {
		t.Fatalf("garbage subject: %v", err)
	}
	// JWKS: public keys only, cacheable.
	resp, err := http.Get(tts.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), `"d"`) || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("JWKS %s %v", body, resp.Header)
	}
}

// TestRotationAndReplicas: two replicas share one key file; a rotation is
// picked up without a restart, and tokens issued before it stay valid.
func TestRotationAndReplicas(t *testing.T) {
	f := newFixture(t)
	file := t.TempDir() + "/keys.json"
	a := f.start(t, file)
	b := f.start(t, file)
	alice := f.UserToken(t, "alice@authmesh.dev", "openid")
	orders := f.client(t, "orders-service")
	v := txnValidator(t, a.JWKSURL)
	before, err := orders.Exchange(context.Background(), alice, []string{"read:profile"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := keys.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := set.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	if err := rotated.Save(file); err != nil {
		t.Fatal(err)
	}
	// Both replicas sign with the promoted key within the reload period.
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range []*ttstest.TTS{a, b} {
		for !servesCurrent(t, r.JWKSURL, rotated.CurrentKID()) {
			if time.Now().After(deadline) {
				t.Fatal("rotation not picked up")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			fresh := natsauthClient(t, f)
			tok, err := fresh.Exchange(context.Background(), alice, []string{"read:profile"})
			if err != nil {
				t.Error(err)
				return
			}
			c, err := v.Validate(context.Background(), tok)
			if err != nil || c.KeyID != rotated.CurrentKID() {
				t.Errorf("after rotation: %v %+v", err, c)
			}
		})
	}
	wg.Wait()
	if _, err := v.Validate(context.Background(), before); err != nil {
		t.Fatalf("a token issued before the rotation: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}
}

func natsauthClient(t *testing.T, f *fixture) *natsauth.TxnClient {
	return f.client(t, "orders-service")
}

func servesCurrent(t *testing.T, jwks, kid string) bool {
	resp, err := http.Get(jwks)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if json.NewDecoder(resp.Body).Decode(&set) != nil || len(set.Keys) == 0 {
		return false
	}
	return set.Keys[0].Kid == kid
}

// TestCompromisedWorkloadAsksTheTTS: each workload, with exactly what its
// process holds (its NATS account, its own M2M token, the access tokens of
// requests it serves), asks the real service for more than it may. Nothing
// is issued beyond the caller's token and the workload's own hops.
func TestCompromisedWorkloadAsksTheTTS(t *testing.T) {
	f := newFixture(t)
	tts := f.start(t, "")
	v := txnValidator(t, tts.JWKSURL)
	alice := f.UserToken(t, "alice@authmesh.dev", "openid")
	aliceSub := subOf(t, v, f, alice)
	expired := strings.Join([]string{"eyJhbGciOiJSUzI1NiJ9", "eyJleHAiOjF9", "c2ln"}, ".")
	for _, w := range []struct{ workload, client string }{{"users", "users-service"}, {"orders", "orders-service"}, {"billing", "billing-service"}} {
		t.Run(w.workload, func(t *testing.T) {
			nc, _ := meshtest.Connect(t, f.NATS, w.workload)
			own := f.ClientToken(t, w.client)
			ask := func(body map[string]any) (natsauth.TxnResponse, error) {
				req := map[string]any{
					"grant_type": authz.GrantTypeTokenExchange, "requested_token_type": authz.TokenTypeTxn,
					"audience": authz.DefaultTrustDomain, "subject_token_type": authz.TokenTypeAccess,
					"actor_token": own, "actor_token_type": authz.TokenTypeAccess,
				}
				for k, v := range body {
					req[k] = v
				}
				b, _ := json.Marshal(req)
				m, err := nc.Request(natsauth.DefaultTxnSubject, b, 3*time.Second)
				if err != nil {
					return natsauth.TxnResponse{}, err
				}
				if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
					return natsauth.TxnResponse{}, errors.New(code + " " + m.Header.Get("Nats-Service-Error"))
				}
				var r natsauth.TxnResponse
				err = json.Unmarshal(m.Data, &r)
				return r, err
			}
			for name, body := range map[string]map[string]any{
				"no access token":            {"scope": "read:profile"},
				"garbage access token":       {"subject_token": "garbage", "scope": "read:profile"},
				"expired access token":       {"subject_token": expired, "scope": "read:profile"},
				"a scope alice lacks":        {"subject_token": alice, "scope": "refund:invoices"},
				"another workload's scopes":  {"subject_token": alice, "scope": "block:users"},
				"its own token, foreign hop": {"subject_token": own, "scope": "read:profile create:orders"},
			} {
				if w.workload == "users" && name == "another workload's scopes" {
					continue // block:users is users' own hop, but alice lacks it: covered above
				}
				if r, err := ask(body); err == nil {
					t.Errorf("%s: issued %q", name, r.Scope)
				}
			}
			// Asking for another user: the token's subject wins, whatever the request says.
			r, err := ask(map[string]any{"subject_token": alice, "scope": strings.Join(mesh.WorkloadScopes(w.workload), " "),
				"sub": "auth0|someone-else", "requested_subject": "auth0|someone-else"})
			if w.workload == "users" {
				if err == nil {
					t.Errorf("users got %q for alice, who holds none of its hops' scopes", r.Scope)
				}
				return
			}
			if err != nil {
				t.Fatalf("a legitimate exchange: %v", err)
			}
			c, err := v.Validate(context.Background(), r.AccessToken)
			if err != nil || c.Subject != aliceSub || c.RequestingWorkload != w.client {
				t.Fatalf("issued %+v, %v: want alice's, requested by %s", c, err, w.client)
			}
			for _, s := range c.Scopes.List() {
				if !slices.Contains(mesh.WorkloadScopes(w.workload), s) {
					t.Errorf("%s got scope %s outside its hops", w.workload, s)
				}
			}
		})
	}
}

func subOf(t *testing.T, _ *authz.TxnValidator, f *fixture, tok string) string {
	t.Helper()
	kp, _ := authz.NewKeyProvider(authz.WithJWKSURL(f.JWKSURL))
	v, _ := authz.NewValidator(kp, authz.WithIssuers(f.Issuer), authz.WithAudiences(audience))
	c, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return c.Subject
}
