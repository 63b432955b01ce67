package tenant

// Verifying our own tokens (userinfo, Management API), and /userinfo.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
)

// ownTokens verifies the access tokens this tenant issued to its own
// endpoints (/userinfo, the Management API) with pkg/authz's Validator, the
// engine the services verify the same tokens with. Its keys are the
// tenant's JWKS, read in process: the provider's HTTP client never leaves
// the process. A key set changed by rotation or revocation gets new
// validators, so a revoked key's tokens are refused at once rather than
// when a cached JWKS would have expired.
type ownTokens struct {
	mu      sync.Mutex
	version uint64                      // of the key set the validators were built on
	byAud   map[string]*authz.Validator // one per endpoint audience
}

// verify checks a token this tenant issued for audience, one of its own
// endpoints' (<issuer>userinfo or the Management API's).
func (s *Server) verify(ctx context.Context, raw, audience string) (*authz.Claims, error) {
	v, err := s.validator(audience)
	if err != nil {
		return nil, err // New built them from the same settings: never, in practice
	}
	return v.Validate(ctx, raw)
}

// validator returns the validator for audience over the key set as it is now.
func (s *Server) validator(audience string) (*authz.Validator, error) {
	o := &s.ownTokens
	o.mu.Lock()
	defer o.mu.Unlock()
	if version := s.keys.version(); o.byAud == nil || o.version != version {
		keys, err := authz.NewKeyProvider(
			authz.WithJWKSURL(s.model.Issuer+".well-known/jwks.json"),
			authz.WithHTTPClient(&http.Client{Transport: jwksTransport{s.keys}}))
		if err != nil {
			return nil, err
		}
		byAud := map[string]*authz.Validator{}
		for _, aud := range []string{s.model.Issuer + "userinfo", s.model.MgmtAud} {
			// No token cache: every request is verified afresh.
			if byAud[aud], err = authz.NewValidator(keys, authz.WithIssuers(s.model.Issuer), authz.WithAudiences(aud), authz.WithTokenCache(0)); err != nil {
				return nil, err
			}
		}
		o.byAud, o.version = byAud, version
	}
	v := o.byAud[audience]
	if v == nil {
		return nil, fmt.Errorf("no validator for audience %q", audience)
	}
	return v, nil
}

// jwksTransport answers the key provider's JWKS request with the tenant's
// published keys, without a network round trip.
type jwksTransport struct{ keys *keyStore }

func (t jwksTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := json.Marshal(t.keys.jwks())
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       r,
	}, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
		return
	}
	unauthorized := func(desc string) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devtenant", error="invalid_token", error_description="`+desc+`"`)
		oauthError(w, http.StatusUnauthorized, "invalid_token", desc)
	}
	raw, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devtenant"`)
		oauthError(w, http.StatusUnauthorized, "invalid_request", "Missing access token")
		return
	}
	c, err := s.verify(r.Context(), raw, s.model.Issuer+"userinfo")
	if err != nil {
		unauthorized("The access token is invalid or was not issued for /userinfo")
		return
	}
	u, ok := s.store.userByID(c.Subject)
	if !ok {
		unauthorized("The user no longer exists")
		return
	}
	if u.Blocked {
		oauthError(w, http.StatusUnauthorized, "unauthorized", "user is blocked")
		return
	}
	note(r, "sub", u.ID)
	writeJSON(w, http.StatusOK, profileClaims(u, c.Scopes.List(), map[string]any{"sub": u.ID}))
}

// profileClaims adds the OIDC claims the scopes allow.
func profileClaims(u userRecord, scopes []string, out map[string]any) map[string]any {
	if slices.Contains(scopes, "profile") {
		out["name"] = u.Name
		out["nickname"] = u.Nickname
		out["updated_at"] = u.UpdatedAt.UTC().Format(time.RFC3339Nano)
		if u.GivenName != "" {
			out["given_name"] = u.GivenName
		}
		if u.FamilyName != "" {
			out["family_name"] = u.FamilyName
		}
	}
	if slices.Contains(scopes, "email") {
		out["email"] = u.Email
		out["email_verified"] = u.EmailVerified
	}
	return out
}
