package integration

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// tenantKey is devtenant's current signing key, read from its data volume so
// the suite can forge tokens that are wrong in exactly one way while their
// signature is genuine (the strongest form of each attack).
type tenantKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func currentTenantKey(t *testing.T) tenantKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := stack.container("devtenant").CopyFileFromContainer(ctx, "/data/keys.json")
	if err != nil {
		t.Fatalf("reading devtenant's keys: %v", err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []struct {
			KID        string `json:"kid"`
			PrivateKey string `json:"private_key"`
			State      string `json:"state"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("devtenant keys.json: %v", err)
	}
	for _, k := range doc.Keys {
		if k.State != "current" {
			continue
		}
		block, _ := pem.Decode([]byte(k.PrivateKey))
		if block == nil {
			t.Fatal("devtenant's current key is not PEM")
		}
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		rk, ok := priv.(*rsa.PrivateKey)
		if !ok {
			t.Fatalf("devtenant's current key is %T, want RSA", priv)
		}
		return tenantKey{kid: k.KID, priv: rk}
	}
	t.Fatal("devtenant has no current key")
	return tenantKey{}
}

// jwtParts splits a real token into its decoded header and claims.
func jwtParts(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

func b64JSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign builds a JWS compact token; alg decides how key signs it.
func sign(header, claims map[string]any, key any) (string, error) {
	input := b64JSON(header) + "." + b64JSON(claims)
	var sig []byte
	switch header["alg"] {
	case "none", "None", "NONE":
		return input + ".", nil
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "RS256":
		h := sha256.Sum256([]byte(input))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:]); err != nil {
			return "", err
		}
	case "RS512":
		h := sha512.Sum512([]byte(input))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA512, h[:]); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("alg %v", header["alg"])
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// attackTokens are the foundation issue's attack tokens, each derived from a
// genuine token of alice's, so the one thing wrong with it is the attack.
func attackTokens(t *testing.T, real string, key tenantKey) map[string]string {
	t.Helper()
	header, claims := jwtParts(t, real)
	if header["kid"] != key.kid {
		t.Fatalf("alice's token has kid %v, devtenant's current key is %s", header["kid"], key.kid)
	}
	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	now := time.Now().Unix()

	with := func(m map[string]any, kv ...any) map[string]any {
		c := maps.Clone(m)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	n := base64.RawURLEncoding.EncodeToString(foreign.N.Bytes())
	cases := []struct {
		name   string
		header map[string]any
		claims map[string]any
		key    any
	}{
		{"alg none", with(header, "alg", "none"), claims, nil},
		{"alg NONE", with(header, "alg", "NONE"), claims, nil},
		{"HS256 keyed with the public key", with(header, "alg", "HS256"), claims, pubPEM},
		{"RS512 with the tenant's key", with(header, "alg", "RS512"), claims, key.priv},
		{"foreign key, unknown kid", with(header, "kid", "attacker-key-1"), claims, foreign},
		{"foreign key, the tenant's kid", header, claims, foreign},
		{"no kid", with(header, "kid", nil), claims, key.priv},
		{"expired", header, with(claims, "iat", now-7200, "exp", now-3600), key.priv},
		{"issued in the future", header, with(claims, "iat", now+3600, "nbf", now+3600), key.priv},
		{"no exp", header, with(claims, "exp", nil), key.priv},
		{"wrong issuer", header, with(claims, "iss", "https://evil.example/"), key.priv},
		{"issuer without trailing slash", header, with(claims, "iss", strings.TrimSuffix(issuer, "/")), key.priv},
		{"wrong audience", header, with(claims, "aud", "https://api.elsewhere.dev"), key.priv},
		{"Management API audience", header, with(claims, "aud", mgmtAud), key.priv},
		{"jku pointing elsewhere", with(header, "jku", "https://evil.example/.well-known/jwks.json"), claims, key.priv},
		{"embedded jwk", with(header, "jwk", map[string]any{"kty": "RSA", "n": n, "e": "AQAB", "kid": "attacker-key-1"}, "kid", "attacker-key-1"), claims, foreign},
	}
	out := map[string]string{}
	for _, c := range cases {
		tok, err := sign(c.header, c.claims, c.key)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out[c.name] = tok
	}
	parts := strings.Split(real, ".")
	escalated := with(claims, "permissions", []string{"read:all-orders", "read:all-invoices", "read:users", "refund:invoices"})
	out["claims changed, signature kept"] = parts[0] + "." + b64JSON(escalated) + "." + parts[2]
	out["signature stripped"] = parts[0] + "." + parts[1] + "."
	out["garbage"] = "not-a-jwt"
	out["three garbage segments"] = "a.b.c"
	out["base64 garbage"] = base64.RawURLEncoding.EncodeToString([]byte("{]")) + "." + parts[1] + "." + parts[2]
	return out
}

// testAttackTokens sends every attack token to every service over the
// network: each answers 401 invalid_token (contract §5), never 2xx, 5xx or a
// token echoed back, while a control token forged the same way with nothing
// wrong is accepted (so the rejections are the attacks', not the forging's).
func testAttackTokens(t *testing.T) {
	key := currentTenantKey(t)
	real := api.Token(t, apiclient.Alice)
	header, claims := jwtParts(t, real)
	control, err := sign(header, claims, key.priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range apiclient.AuthedRoutes {
		if r := api.Call(t, http.MethodGet, rt.Svc, rt.Path, control, nil); r.Status != http.StatusOK {
			t.Fatalf("control token (forged with the tenant's key, nothing wrong) at %s %s: %s, want 200", rt.Svc, rt.Path, r)
		}
	}

	countOrders := func() int {
		orders := api.OrdersOf(t, real)
		return len(orders)
	}
	before := countOrders()
	routes := append(apiclient.AuthedRoutes[:len(apiclient.AuthedRoutes):len(apiclient.AuthedRoutes)], apiclient.Route{Svc: "orders", Path: "/v1/orders (POST)"})
	// The group returns only when its parallel subtests have finished.
	t.Run("every service", func(t *testing.T) {
		for name, tok := range attackTokens(t, real, key) {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				for _, rt := range routes {
					method, path, body := http.MethodGet, rt.Path, any(nil)
					if p, ok := strings.CutSuffix(rt.Path, " (POST)"); ok {
						method, path, body = http.MethodPost, p, apiclient.Mugs(1)
					}
					r, err := api.TryCall(method, rt.Svc, path, tok, body)
					if err != nil {
						t.Errorf("%s %s: %v", method, rt.Svc+path, err)
						continue
					}
					if err := apiclient.WantInvalidToken(r); err != nil {
						t.Errorf("%s %s: %v", method, rt.Svc+path, err)
					}
					if len(tok) > 20 && strings.Contains(string(r.Body), tok[len(tok)-20:]) {
						t.Errorf("%s %s: the error body echoes the token", method, rt.Svc+path)
					}
				}
			})
		}
	})
	if after := countOrders(); after != before {
		t.Errorf("alice had %d orders before the attacks and %d after: an attack token placed an order", before, after)
	}
}

func b64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
