package integration

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

type signingKeyInfo struct {
	KID      string `json:"kid"`
	Current  bool   `json:"current"`
	Next     bool   `json:"next"`
	Previous bool   `json:"previous"`
	Revoked  bool   `json:"revoked"`
}

func signingKeys(t *testing.T, mgmt string) []signingKeyInfo {
	t.Helper()
	var keys []signingKeyInfo
	api.CallJSON(t, http.MethodGet, "devtenant", "/api/v2/keys/signing", mgmt, nil, http.StatusOK, &keys)
	return keys
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, _ := jwtParts(t, tok)
	kid, _ := h["kid"].(string)
	return kid
}

// unknownKIDToken is a token whose kid no JWKS has: a service that sees it
// looks for fresh keys (at most once per its 30 s cool-down).
func unknownKIDToken(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, claims := jwtParts(t, api.Token(t, apiclient.Dave))
	tok, err := sign(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "nudge-" + fmt.Sprint(time.Now().UnixNano())}, claims, k)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testKeyRotation rotates devtenant's signing key through its Management API
// while clients keep calling every service with the tokens issued before and
// after: no request fails. The old key's tokens keep working until the key is
// revoked and are refused after that; tokens of the new key and the events
// signed with them keep flowing.
func testKeyRotation(t *testing.T) {
	mgmt := mgmtToken(t)
	old := api.Token(t, apiclient.Alice)
	oldKID := kidOf(t, old)
	var before signingKeyInfo
	for _, k := range signingKeys(t, mgmt) {
		if k.Current {
			before = k
		}
	}
	if before.KID != oldKID {
		t.Fatalf("alice's token has kid %s, the current key is %+v", oldKID, before)
	}

	// Traffic: workers call every service, alternating the old token and the
	// latest one devtenant issues (refreshed continuously).
	var latest atomic.Pointer[string]
	latest.Store(&old)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	var total, withNewKey atomic.Int64
	fail := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, s)
		}
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			r, err := api.TokenRequest(url.Values{
				"grant_type": {"password"}, "username": {apiclient.Alice}, "password": {apiclient.Password},
				"client_id": {"authmesh-cli"}, "audience": {apiclient.Audience}, "scope": {"openid"},
			})
			if err != nil || r.Status != http.StatusOK {
				fail(fmt.Sprintf("token during rotation: %v %d %s", err, r.Status, r.Error))
			} else {
				latest.Store(&r.AccessToken)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				tok := old
				if (w+i)%2 == 0 {
					tok = *latest.Load()
				}
				rt := apiclient.AuthedRoutes[i%len(apiclient.AuthedRoutes)]
				method, path, body, want := http.MethodGet, rt.Path, any(nil), http.StatusOK
				if i%7 == 3 {
					method, path, body, want = http.MethodPost, "/v1/orders", apiclient.Mugs(1), http.StatusCreated
					rt.Svc = "orders"
				}
				r, err := api.TryCall(method, rt.Svc, path, tok, body)
				total.Add(1)
				if tok != old {
					if h, _, ok := decodeHeader(tok); ok && h != oldKID {
						withNewKey.Add(1)
					}
				}
				if err != nil || r.Status != want {
					fail(fmt.Sprintf("%s %s%s: %v %v", method, rt.Svc, path, r, err))
				}
			}
		})
	}

	time.Sleep(time.Second)
	var rotated struct {
		KID string `json:"kid"`
	}
	api.CallJSON(t, http.MethodPost, "devtenant", "/api/v2/keys/signing/rotate", mgmt, nil, http.StatusCreated, &rotated)
	if rotated.KID == "" || rotated.KID == oldKID {
		t.Fatalf("rotate answered kid %q, want a new current key (old %s)", rotated.KID, oldKID)
	}
	states := map[string]signingKeyInfo{}
	for _, k := range signingKeys(t, mgmt) {
		states[k.KID] = k
	}
	if !states[rotated.KID].Current || !states[oldKID].Previous {
		t.Fatalf("after rotate: new %+v, old %+v; want current and previous", states[rotated.KID], states[oldKID])
	}
	// Keep the traffic going until plenty of requests used the new key.
	for deadline := time.Now().Add(30 * time.Second); withNewKey.Load() < 30 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests during the rotation failed; first: %v", len(failures), total.Load(), failures)
	}
	if withNewKey.Load() == 0 {
		t.Fatalf("no request used a token of the new key (%d requests)", total.Load())
	}
	t.Logf("rotation under traffic: %d requests, %d with the new key's tokens, none failed", total.Load(), withNewKey.Load())

	fresh := api.Token(t, apiclient.Alice)
	if k := kidOf(t, fresh); k != rotated.KID {
		t.Fatalf("token after rotate has kid %s, want the new current %s", k, rotated.KID)
	}
	for _, rt := range apiclient.AuthedRoutes {
		for name, tok := range map[string]string{"old key, not yet revoked": old, "new key": fresh} {
			if r := api.Call(t, http.MethodGet, rt.Svc, rt.Path, tok, nil); r.Status != http.StatusOK {
				t.Fatalf("%s %s with a token of the %s: %s, want 200", rt.Svc, rt.Path, name, r)
			}
		}
	}

	api.CallJSON(t, http.MethodPut, "devtenant", "/api/v2/keys/signing/"+url.PathEscape(oldKID)+"/revoke", mgmt, nil, http.StatusOK, nil)
	// The services learn of a revocation on their next JWKS fetch: scheduled
	// (every 8 minutes), or on meeting a kid they do not know, at most once per
	// 30 s. The unknown-kid token brings that fetch forward.
	nudge := unknownKIDToken(t)
	for _, rt := range apiclient.AuthedRoutes {
		apiclient.Eventually(t, 45*time.Second, rt.Svc+" refuses the revoked key's token", func() (bool, string) {
			api.Call(t, http.MethodGet, rt.Svc, rt.Path, nudge, nil)
			err := apiclient.WantInvalidToken(api.Call(t, http.MethodGet, rt.Svc, rt.Path, old, nil))
			if err == nil {
				return true, ""
			}
			time.Sleep(time.Second)
			return false, err.Error()
		})
		if r := api.Call(t, http.MethodGet, rt.Svc, rt.Path, fresh, nil); r.Status != http.StatusOK {
			t.Fatalf("%s %s with the new key's token after the revocation: %s", rt.Svc, rt.Path, r)
		}
	}
	// Events signed with the new key (and the services' M2M tokens) keep flowing.
	o := api.PlaceOrder(t, fresh, apiclient.Mugs(2))
	inv := api.WaitInvoice(t, fresh, o.ID, "open", apiclient.FlowDeadline)
	api.CallJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", fresh, nil, http.StatusOK, nil)
	api.WaitOrder(t, fresh, o.ID, "paid", apiclient.FlowDeadline)
}

// decodeHeader returns a token's kid without failing the test (for goroutines).
func decodeHeader(tok string) (kid string, alg string, ok bool) {
	var h struct {
		KID string `json:"kid"`
		Alg string `json:"alg"`
	}
	i := 0
	for i < len(tok) && tok[i] != '.' {
		i++
	}
	b, err := b64Decode(tok[:i])
	if err != nil || json.Unmarshal(b, &h) != nil {
		return "", "", false
	}
	return h.KID, h.Alg, true
}
