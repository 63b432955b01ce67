package authztest

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

// Attack is a token every entry point accepting its kind must refuse: one
// forged, tampered, misdirected or malformed. Reason is the reason of the
// *authz.Error the kind's validator refuses it with (authz.Validator for
// access tokens, authz.TxnValidator for transaction tokens), always with the
// code invalid_token; an entry point that answers in its own terms maps it
// (the auth callout refuses with the reason, a consumer dead-letters with
// "invalid_token: <reason>", the TTS answers 401 "subject_<reason>").
type Attack struct {
	Name, Token, Reason string
}

// AccessTokenAttacks are the attacks on Auth0 access tokens of iss's tenant,
// for every entry point that takes one (the Validator, the Echo middleware,
// the auth callout, the TTS's subject_token), and for those that must never
// take one (a transaction token's receivers):
//
//	for _, a := range authztest.AccessTokenAttacks(t, iss) {
//		t.Run(a.Name, func(t *testing.T) { /* present a.Token, want a.Reason */ })
//	}
//
// The transaction tokens among them are signed by a transaction token
// service of their own (no entry point of access tokens trusts any).
func AccessTokenAttacks(tb testing.TB, iss *Issuer) []Attack {
	tb.Helper()
	k := iss.SigningKey()
	attacker := AttackerKey(tb, k.Private)
	hdr := func(extra map[string]any) map[string]any {
		return Claims{"alg": "RS256", "typ": "JWT", "kid": k.ID}.With(extra)
	}
	claims := func(extra Claims) Claims { return iss.DefaultClaims().With(extra) }
	// HS256 with the RSA public key (its modulus bytes) as the secret.
	hsToken := func() string {
		in := Encode(tb, hdr(map[string]any{"alg": "HS256"})) + "." + Encode(tb, claims(nil))
		mac := hmac.New(sha256.New, k.Private.PublicKey.N.Bytes())
		mac.Write([]byte(in))
		return in + "." + b64(mac.Sum(nil))
	}
	attackerJWK := PublicJWK(&Key{ID: k.ID, Private: attacker})
	tts := NewTxnIssuer(tb)
	now := time.Now()
	good := iss.Token(tb, nil)
	parts := strings.Split(good, ".")
	return []Attack{
		{"alg none", Encode(tb, hdr(map[string]any{"alg": "none"})) + "." + Encode(tb, claims(nil)) + ".", "algorithm"},
		{"HS256 with public key as secret", hsToken(), "algorithm"},
		{"foreign key under known kid", Sign(tb, attacker, hdr(nil), claims(nil)), "bad_signature"},
		{"unknown kid", Sign(tb, attacker, hdr(map[string]any{"kid": "nope"}), claims(nil)), "unknown_kid"},
		{"no kid", Sign(tb, k.Private, hdr(map[string]any{"kid": nil}), claims(nil)), "missing_kid"},
		{"expired", iss.Token(tb, Claims{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()}), "expired"},
		{"nbf in the future", iss.Token(tb, Claims{"nbf": now.Add(time.Hour).Unix()}), "not_yet_valid"},
		{"iat in the future", iss.Token(tb, Claims{"iat": now.Add(time.Hour).Unix()}), "issued_in_future"},
		{"missing exp", iss.Token(tb, Claims{"exp": nil}), "missing_exp"},
		{"wrong issuer", iss.Token(tb, Claims{"iss": "https://evil.example/"}), "issuer"},
		{"issuer without trailing slash", iss.Token(tb, Claims{"iss": strings.TrimSuffix(iss.Issuer(), "/")}), "issuer"},
		{"wrong audience", iss.Token(tb, Claims{"aud": "https://other.api"}), "audience"},
		{"wrong audience array", iss.Token(tb, Claims{"aud": []string{"https://other.api", iss.Issuer() + "userinfo"}}), "audience"},
		{"jku to attacker", Sign(tb, attacker, hdr(map[string]any{"jku": "https://evil.example/jwks.json"}), claims(nil)), "key_in_header"},
		{"x5u to attacker", Sign(tb, attacker, hdr(map[string]any{"x5u": "https://evil.example/cert.pem"}), claims(nil)), "key_in_header"},
		{"embedded jwk", Sign(tb, attacker, hdr(map[string]any{"jwk": attackerJWK}), claims(nil)), "key_in_header"},
		{"embedded x5c", Sign(tb, attacker, hdr(map[string]any{"x5c": []string{"MIIB"}}), claims(nil)), "key_in_header"},
		{"crit header", Sign(tb, k.Private, hdr(map[string]any{"crit": []string{"exp"}, "exp": 1}), claims(nil)), "crit_header"},
		{"garbage", "not-a-token", "malformed"},
		{"two segments", parts[0] + "." + parts[1], "malformed"},
		{"four segments", good + ".x", "malformed"},
		{"bad base64 header", "%%%." + parts[1] + "." + parts[2], "malformed"},
		{"bad base64 payload", parts[0] + ".!!!." + parts[2], "malformed"},
		{"bad base64 signature", parts[0] + "." + parts[1] + ".***", "malformed"},
		{"header not JSON", b64([]byte("not json")) + "." + parts[1] + "." + parts[2], "malformed"},
		{"claims not JSON", Sign(tb, k.Private, hdr(nil), []byte("not json")), "malformed"},
		{"claims JSON array", Sign(tb, k.Private, hdr(nil), []byte("[1,2]")), "malformed"},
		{"permissions wrong type", iss.Token(tb, Claims{"permissions": "read:profile"}), "malformed"},
		{"exp wrong type", iss.Token(tb, Claims{"exp": "tomorrow"}), "malformed"},
		{"tampered payload", parts[0] + "." + Encode(tb, claims(Claims{"permissions": []string{"block:users"}})) + "." + parts[2], "bad_signature"},
		{"typ dpop+jwt", Sign(tb, k.Private, hdr(map[string]any{"typ": "dpop+jwt"}), claims(nil)), "typ"},
		{"tenant-signed txn typ", Sign(tb, k.Private, hdr(map[string]any{"typ": txnTokenType}), claims(nil)), "typ"},
		{"tenant-signed txn typ in full", Sign(tb, k.Private, hdr(map[string]any{"typ": "application/" + txnTokenType}), claims(nil)), "typ"},
		{"transaction token", tts.Token(tb, "auth0|alice", "read:profile", nil), "algorithm"},
		{"transaction token with the tenant's iss and aud", tts.Token(tb, "auth0|alice", "read:profile", Claims{"aud": Audience, "iss": iss.Issuer()}), "algorithm"},
		{"1 MB token", parts[0] + "." + strings.Repeat("A", 1<<20) + "." + parts[2], "too_large"},
	}
}

// txnTokenType is authz.TxnTokenType (this package stays below authz, whose
// own tests use it).
const txnTokenType = "txntoken+jwt"

// TxnTokenAttacks are the attacks on transaction tokens of tts, for every
// entry point that takes one (the TxnValidator, a natsauth service's
// requests, a consumer's events). tenant is the Auth0 tenant of the mesh:
// its access tokens are never transaction tokens. The tokens bind no event
// of their own unless the attack is about the binding, so an entry point
// that checks bindings must refuse them before it gets there.
func TxnTokenAttacks(tb testing.TB, tts *TxnIssuer, tenant *Issuer) []Attack {
	tb.Helper()
	now := time.Now()
	const sub, scope = "auth0|alice", "read:profile"
	valid := func(over Claims) Claims { return tts.claims(sub, scope, over) }
	sign := func(hdr map[string]any, c Claims) string { return SignJWS(tb, tts.SigningKey(), hdr, c) }
	typ := map[string]any{"typ": txnTokenType}
	forger := NewECKey(tb)
	forger.KeyID = tts.SigningKey().KeyID
	// An event binding names a subject and a base64url SHA-256 (43 chars).
	event := func(binding map[string]any) Claims { return Claims{"tctx": map[string]any{"evt": binding}} }
	digest := strings.Repeat("A", 43)
	good := tts.Token(tb, sub, scope, nil)
	parts := strings.Split(good, ".")
	return []Attack{
		{"tenant access token", tenant.Token(tb, Claims{"permissions": []string{scope}}), "typ"},
		{"tenant M2M token", tenant.M2MToken(tb, "orders-service", "cancel:orders"), "typ"},
		{"wrong typ", sign(map[string]any{"typ": "JWT"}, valid(nil)), "typ"},
		{"no typ", sign(nil, valid(nil)), "typ"},
		{"foreign key under known kid", SignJWS(tb, forger, typ, valid(nil)), "bad_signature"},
		{"unknown kid", SignJWS(tb, NewECKey(tb), typ, valid(nil)), "unknown_kid"},
		{"wrong audience", tts.Token(tb, sub, scope, Claims{"aud": Audience}), "audience"},
		{"other trust domain", tts.Token(tb, sub, scope, Claims{"aud": "urn:other:mesh"}), "audience"},
		{"wrong issuer", tts.Token(tb, sub, scope, Claims{"iss": "http://localhost:8400/"}), "issuer"},
		{"expired", tts.Token(tb, sub, scope, Claims{"iat": now.Add(-10 * time.Minute).Unix(), "exp": now.Add(-time.Minute).Unix()}), "expired"},
		{"too long lived", tts.Token(tb, sub, scope, Claims{"exp": now.Add(2 * time.Hour).Unix()}), "lifetime"},
		{"event-bound, too long lived", tts.Token(tb, sub, scope, Claims{"exp": now.Add(25 * time.Hour).Unix()}.With(
			event(map[string]any{"subject": "orders.events.created", "sha256": digest}))), "lifetime"},
		{"event binding without a digest", tts.Token(tb, sub, scope, event(map[string]any{"subject": "orders.events.created"})), "malformed"},
		{"event binding with a short digest", tts.Token(tb, sub, scope, event(map[string]any{"subject": "orders.events.created", "sha256": "AAAA"})), "malformed"},
		{"no scope", tts.Token(tb, sub, "", nil), "missing_claim"},
		{"no txn", tts.Token(tb, sub, scope, Claims{"txn": nil}), "missing_claim"},
		{"no req_wl", tts.Token(tb, sub, scope, Claims{"req_wl": nil}), "missing_claim"},
		{"no iat", tts.Token(tb, sub, scope, Claims{"iat": nil}), "missing_exp"},
		{"alg none", Encode(tb, map[string]any{"alg": "none", "typ": txnTokenType, "kid": forger.KeyID}) + "." + Encode(tb, valid(nil)) + ".", "algorithm"},
		{"embedded jwk", sign(map[string]any{"typ": txnTokenType, "jwk": map[string]any{"kty": "EC"}}, valid(nil)), "key_in_header"},
		{"tampered payload", parts[0] + "." + Encode(tb, valid(Claims{"scope": "admin:users"})) + "." + parts[2], "bad_signature"},
		{"garbage", "not.a.token", "malformed"},
	}
}

// maxSeed bounds a fuzz seed: the fuzzer mutates every seed it is given,
// and one of a megabyte slows it to a crawl.
const maxSeed = 64 << 10

// Seeds returns the attacks' tokens to seed a fuzzer with (f.Add), leaving
// out those over 64 KiB.
func Seeds(attacks []Attack) []string {
	var out []string
	for _, a := range attacks {
		if len(a.Token) <= maxSeed {
			out = append(out, a.Token)
		}
	}
	return out
}
