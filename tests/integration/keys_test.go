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
	callJSON(t, http.MethodGet, "devtenant", "/api/v2/keys/signing", mgmt, nil, http.StatusOK, &keys)
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
	_, claims := jwtParts(t, token(t, dave))
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
	old := token(t, alice)
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
			r, err := tokenRequest(url.Values{
				"grant_type": {"password"}, "username": {alice}, "password": {password},
				"client_id": {"authmesh-cli"}, "audience": {audience}, "scope": {"openid"},
			})
			if err != nil || r.status != http.StatusOK {
				fail(fmt.Sprintf("token during rotation: %v %d %s", err, r.status, r.Error))
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
				rt := authedRoutes[i%len(authedRoutes)]
				method, path, body, want := http.MethodGet, rt.path, any(nil), http.StatusOK
				if i%7 == 3 {
					method, path, body, want = http.MethodPost, "/v1/orders", mugs(1), http.StatusCreated
					rt.svc = "orders"
				}
				r, err := tryCall(method, rt.svc, path, tok, body)
				total.Add(1)
				if tok != old {
					if h, _, ok := decodeHeader(tok); ok && h != oldKID {
						withNewKey.Add(1)
					}
				}
				if err != nil || r.status != want {
					fail(fmt.Sprintf("%s %s%s: %v %v", method, rt.svc, path, r, err))
				}
			}
		})
	}

	time.Sleep(time.Second)
	var rotated struct {
		KID string `json:"kid"`
	}
	callJSON(t, http.MethodPost, "devtenant", "/api/v2/keys/signing/rotate", mgmt, nil, http.StatusCreated, &rotated)
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

	fresh := token(t, alice)
	if k := kidOf(t, fresh); k != rotated.KID {
		t.Fatalf("token after rotate has kid %s, want the new current %s", k, rotated.KID)
	}
	for _, rt := range authedRoutes {
		for name, tok := range map[string]string{"old key, not yet revoked": old, "new key": fresh} {
			if r := call(t, http.MethodGet, rt.svc, rt.path, tok, nil); r.status != http.StatusOK {
				t.Fatalf("%s %s with a token of the %s: %s, want 200", rt.svc, rt.path, name, r)
			}
		}
	}

	callJSON(t, http.MethodPut, "devtenant", "/api/v2/keys/signing/"+url.PathEscape(oldKID)+"/revoke", mgmt, nil, http.StatusOK, nil)
	// The services learn of a revocation on their next JWKS fetch: scheduled
	// (every 8 minutes), or on meeting a kid they do not know, at most once per
	// 30 s. The unknown-kid token brings that fetch forward.
	nudge := unknownKIDToken(t)
	for _, rt := range authedRoutes {
		eventually(t, 45*time.Second, rt.svc+" refuses the revoked key's token", func() (bool, string) {
			call(t, http.MethodGet, rt.svc, rt.path, nudge, nil)
			err := wantInvalidToken(call(t, http.MethodGet, rt.svc, rt.path, old, nil))
			if err == nil {
				return true, ""
			}
			time.Sleep(time.Second)
			return false, err.Error()
		})
		if r := call(t, http.MethodGet, rt.svc, rt.path, fresh, nil); r.status != http.StatusOK {
			t.Fatalf("%s %s with the new key's token after the revocation: %s", rt.svc, rt.path, r)
		}
	}
	// Events signed with the new key (and the services' M2M tokens) keep flowing.
	o := placeOrder(t, fresh, mugs(2))
	inv := waitInvoice(t, fresh, o.ID, "open", flowDeadline)
	callJSON(t, http.MethodPost, "billing", "/v1/invoices/"+inv.ID+"/pay", fresh, nil, http.StatusOK, nil)
	waitOrder(t, fresh, o.ID, "paid", flowDeadline)
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
