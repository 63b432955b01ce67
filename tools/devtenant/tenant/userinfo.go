package tenant

// Verifying our own tokens (userinfo, Management API), and /userinfo.

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

type verifiedClaims struct {
	Iss         string           `json:"iss"`
	Sub         string           `json:"sub"`
	Aud         jwt.Audience     `json:"aud"`
	Exp         *jwt.NumericDate `json:"exp"`
	Iat         *jwt.NumericDate `json:"iat"`
	Azp         string           `json:"azp"`
	Scope       string           `json:"scope"`
	Gty         any              `json:"gty"`
	Permissions []string         `json:"permissions"`
}

var errBadToken = errors.New("invalid token")

// verify checks a token this tenant issued for audience.
func (s *Server) verify(raw, audience string) (*verifiedClaims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return nil, errBadToken
	}
	pub := s.keys.publicKey(tok.Headers[0].KeyID)
	if pub == nil {
		return nil, errBadToken
	}
	var c verifiedClaims
	if err := tok.Claims(pub, &c); err != nil {
		return nil, errBadToken
	}
	now := s.now()
	if c.Iss != s.model.Issuer || !c.Aud.Contains(audience) || c.Exp == nil || !now.Before(c.Exp.Time().Add(30*time.Second)) {
		return nil, errBadToken
	}
	return &c, nil
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
	c, err := s.verify(raw, s.model.Issuer+"userinfo")
	if err != nil {
		unauthorized("The access token is invalid or was not issued for /userinfo")
		return
	}
	u, ok := s.store.userByID(c.Sub)
	if !ok {
		unauthorized("The user no longer exists")
		return
	}
	if u.Blocked {
		oauthError(w, http.StatusUnauthorized, "unauthorized", "user is blocked")
		return
	}
	note(r, "sub", u.ID)
	writeJSON(w, http.StatusOK, profileClaims(u, strings.Fields(c.Scope), map[string]any{"sub": u.ID}))
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
