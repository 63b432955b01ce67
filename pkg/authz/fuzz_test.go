package authz_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

// FuzzValidate feeds arbitrary strings to the whole token path: every input
// must yield claims or an *Error, never a panic; and only the tokens signed
// by the issuer may verify.
func FuzzValidate(f *testing.F) {
	iss := authztest.NewIssuer(f)
	v := newValidator(f, iss, []authz.KeyOption{authz.WithRefetchCooldown(1 << 62)})
	good := iss.Token(f, nil)
	k := iss.SigningKey()
	parts := strings.Split(good, ".")
	seeds := []string{
		good,
		"",
		"a.b.c",
		"....",
		parts[0] + "." + parts[1] + ".",
		parts[0] + ".." + parts[2],
		authztest.Encode(f, map[string]any{"alg": "none"}) + "." + parts[1] + ".",
		authztest.Sign(f, k.Private, map[string]any{"alg": "RS256", "kid": k.ID}, []byte(`{"exp":"x"}`)),
		authztest.Sign(f, k.Private, map[string]any{"alg": "RS256", "kid": k.ID, "crit": []string{"b64"}}, iss.DefaultClaims()),
		authztest.Sign(f, k.Private, map[string]any{"alg": "RS256", "kid": k.ID}, []byte(`{"gty":[1],"permissions":{}}`)),
		iss.Token(f, authztest.Claims{"gty": []string{"client-credentials", "password"}}),
		authztest.NewTxnIssuer(f).Token(f, "auth0|alice", "read:profile", nil), // never an access token
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Validate(context.Background(), token)
		if err != nil {
			var ae *authz.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an *authz.Error", err)
			}
			return
		}
		if c == nil || c.Subject == "" || c.ExpiresAt.IsZero() {
			t.Fatalf("accepted token with claims %+v", c)
		}
		// Only the issuer's own tokens can verify, and it signs with one header.
		if token != good && !strings.HasPrefix(token, parts[0]+".") {
			t.Fatalf("accepted a token with a foreign header")
		}
	})
}

// FuzzTxnValidate does for transaction tokens what FuzzValidate does for
// access tokens: any input yields claims or an *Error, never a panic, and
// only tokens the service signed verify — live and as of a stored time.
func FuzzTxnValidate(f *testing.F) {
	tts := authztest.NewTxnIssuer(f)
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(tts.JWKSURL()), authz.WithAlgorithm("ES256"), authz.WithRefetchCooldown(1<<62))
	if err != nil {
		f.Fatal(err)
	}
	v, err := authz.NewTxnValidator(keys, authz.WithIssuers(tts.Issuer), authz.WithAudiences(tts.TrustDomain))
	if err != nil {
		f.Fatal(err)
	}
	good := tts.Token(f, "auth0|alice", "read:profile", nil)
	parts := strings.Split(good, ".")
	tenant := authztest.NewIssuer(f)
	for _, s := range []string{
		good, "", "a.b.c", "....",
		parts[0] + "." + parts[1] + ".",
		authztest.Encode(f, map[string]any{"alg": "none", "typ": authz.TxnTokenType}) + "." + parts[1] + ".",
		tenant.Token(f, nil),
		authztest.SignJWS(f, tts.SigningKey(), map[string]any{"typ": authz.TxnTokenType}, []byte(`{"exp":"x","iat":[]}`)),
		tts.Token(f, "auth0|alice", "", authztest.Claims{"tctx": "not an object"}),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for _, at := range []time.Time{{}, time.Now()} {
			var c *authz.Claims
			var err error
			if at.IsZero() {
				c, err = v.Validate(context.Background(), token)
			} else {
				c, err = v.ValidateAt(context.Background(), token, at)
			}
			if err != nil {
				var ae *authz.Error
				if !errors.As(err, &ae) {
					t.Fatalf("error %v is not an *authz.Error", err)
				}
				continue
			}
			if c == nil || c.Subject == "" || c.Txn == "" || !c.IsTxn() {
				t.Fatalf("accepted a token with claims %+v", c)
			}
			if token != good && !strings.HasPrefix(token, parts[0]+".") {
				t.Fatalf("accepted a token with a foreign header")
			}
		}
	})
}

// FuzzMiddleware feeds the Echo middleware arbitrary Authorization headers
// (Bearer and DPoP schemes, the access-token attacks among the seeds): it
// never panics, never answers 5xx, answers 2xx only to a header holding the
// issuer's own token (its signature perhaps spelled otherwise), and never
// echoes the header.
func FuzzMiddleware(f *testing.F) {
	iss := authztest.NewIssuer(f)
	e := dpopReplica(f, iss, nil, authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
	good := iss.Token(f, nil)
	// A token verifies with its signature in another base64 spelling too.
	signed := good[:strings.LastIndex(good, ".")+1]
	if rec := do(e, http.MethodGet, "/v1/me", good); rec.Code != http.StatusOK {
		f.Fatalf("HTTP %d for the issuer's token", rec.Code)
	}
	for _, s := range append(authztest.Seeds(authztest.AccessTokenAttacks(f, iss)), good) {
		f.Add("Bearer " + s)
		f.Add("DPoP " + s)
	}
	for _, s := range []string{"", "Bearer", "Bearer ", "bearer " + good, "Bearer  " + good, "Basic dXNlcjpwYXNz", "Bearer a b", "DPoP"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authorization string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
		req.Header["Authorization"] = []string{authorization}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("HTTP %d", rec.Code)
		case rec.Code < 300 && !strings.Contains(authorization, signed):
			t.Fatalf("HTTP %d for a header without the issuer's token", rec.Code)
		case len(authorization) >= 16 && strings.Contains(rec.Body.String()+fmt.Sprint(rec.Header()), authorization):
			t.Fatal("the answer echoes the header")
		}
	})
}
