package authz

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	fastjson "github.com/segmentio/encoding/json"
)

func TestTokenCacheBoundedAndExpiring(t *testing.T) {
	t.Parallel()
	c := newTokenCache(64)
	now := time.Now()
	for i := range 1000 {
		c.put(sha256.Sum256([]byte(fmt.Sprint(i))), &Claims{ExpiresAt: now.Add(time.Hour)})
	}
	if n := c.len(); n > 64 {
		t.Errorf("cache holds %d entries, bound 64", n)
	}
	k := sha256.Sum256([]byte("short"))
	c.put(k, &Claims{ExpiresAt: now.Add(time.Second)})
	if _, ok := c.get(k, now); !ok {
		t.Fatal("fresh entry missing")
	}
	if _, ok := c.get(k, now.Add(time.Second)); ok {
		t.Error("entry served at its exp")
	}
	if _, ok := c.get(k, now); ok {
		t.Error("expired entry not removed")
	}
}

func TestHeaderCache(t *testing.T) {
	t.Parallel()
	enc := func(h string) string { return base64.RawURLEncoding.EncodeToString([]byte(h)) + ".e30.sig" }
	var c headerCache
	good := enc(`{"alg":"RS256","typ":"JWT","kid":"k1"}`)
	for range 2 { // parsed, then from the cache
		h, err := c.parse(good)
		if err != nil || h.Kid != "k1" || h.Alg != "RS256" {
			t.Fatalf("good header: %+v, %v", h, err)
		}
	}
	bad := enc(`{"alg":"RS256","kid":"k1","jku":"https://evil.example/jwks"}`)
	for range 2 { // refused every time: refusals are not cached
		if _, err := c.parse(bad); CodeOf(err) != CodeInvalidToken {
			t.Fatalf("jku header accepted: %v", err)
		}
	}
	// A cached header does not make a malformed token acceptable.
	if _, err := c.parse(good[:strings.IndexByte(good, '.')] + ".e30"); err == nil {
		t.Fatal("two-part token accepted")
	}
	for i := range 2 * maxHeaders {
		if _, err := c.parse(enc(fmt.Sprintf(`{"alg":"RS256","kid":"k%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > maxHeaders {
		t.Fatalf("cache holds %d headers, bound %d", n, maxHeaders)
	}
}

// FuzzClaimsDecoders: the payload decoder (segmentio/encoding/json) accepts
// and refuses what encoding/json does, with the same claims.
func FuzzClaimsDecoders(f *testing.F) {
	for _, s := range []string{
		`{"scope":"openid read:orders","permissions":["read:orders"],"https://authmesh.dev/roles":["customer"],"azp":"cli","gty":"password","org_id":"o"}`,
		`{"gty":["client-credentials"],"client_id":"svc","scope":"read:users"}`,
		`{"permissions":"read:orders"}`, `{"gty":[1]}`, `{"scope":1}`, `{"Scope":"x","PERMISSIONS":["a"]}`,
		`{"scope":"a","scope":"b"}`, `{"scope":"\ud800"}`, "{\"scope\":\"\xff\"}", `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, std defaultClaimsJSON
		errFast := fastjson.Unmarshal(b, &fast)
		errStd := json.Unmarshal(b, &std)
		if (errFast == nil) != (errStd == nil) {
			t.Fatalf("%q: segmentio error %v, encoding/json error %v", b, errFast, errStd)
		}
		if errStd == nil && !reflect.DeepEqual(fast, std) {
			t.Fatalf("%q: segmentio %+v, encoding/json %+v", b, fast, std)
		}
	})
}
