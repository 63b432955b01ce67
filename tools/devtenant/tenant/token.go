package tenant

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// oidcScopes pass through to tokens regardless of RBAC, as in Auth0.
var oidcScopes = []string{"openid", "profile", "email", "offline_access"}

// accessClaims is the Auth0 access token profile, field for field.
type accessClaims struct {
	Roles       *[]string `json:"https://authmesh.dev/roles,omitempty"`
	Iss         string    `json:"iss"`
	Sub         string    `json:"sub"`
	Aud         any       `json:"aud"` // string, or []string with <issuer>userinfo
	Iat         int64     `json:"iat"`
	Exp         int64     `json:"exp"`
	Scope       string    `json:"scope,omitempty"`
	Azp         string    `json:"azp"`
	Gty         string    `json:"gty,omitempty"`
	Permissions *[]string `json:"permissions,omitempty"`
	OrgID       string    `json:"org_id,omitempty"`   // only when the request named an organization
	OrgName     string    `json:"org_name,omitempty"` // and the tenant puts names in tokens
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
}

// token is /oauth/token.
func (s *Server) token(w http.ResponseWriter, r *http.Request, p params) *oauthErr {
	grant := p.get("grant_type")
	note(r, "grant_type", grant)
	jkt, err := s.tokenProof(w, r, p)
	if err != nil {
		return err
	}
	if g := lookupGrant(grant); g != nil && g.binding != nil {
		if err := g.binding(s, p, jkt); err != nil {
			return err
		}
	}
	resp, err := s.grant(r, p, grant)
	if err != nil {
		return err
	}
	if resp, err = s.bindDPoP(s.requestClient(r, p), resp, jkt); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// grant dispatches a token request on grantTypes.
func (s *Server) grant(r *http.Request, p params, grant string) (*tokenResponse, *oauthErr) {
	if grant == "" {
		return nil, badRequest("Missing required parameter: grant_type")
	}
	g := lookupGrant(grant)
	if g == nil || g.issue == nil {
		return nil, &oauthErr{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("Unsupported grant type: %s", truncate(grant, 100))}
	}
	c, err := s.clientFor(r, p, grant)
	if err != nil {
		return nil, err
	}
	return g.issue(s, r, c, p)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// authenticateClient identifies the client from the body or HTTP Basic and
// checks a confidential client's secret.
func (s *Server) authenticateClient(r *http.Request, p params) (*Client, *oauthErr) {
	id, secret := p.get("client_id"), p.get("client_secret")
	if bu, bp, ok := r.BasicAuth(); ok {
		// RFC 6749 §2.3.1: Basic credentials are form-encoded first.
		du, err1 := url.QueryUnescape(bu)
		dp, err2 := url.QueryUnescape(bp)
		if err1 != nil || err2 != nil || (id != "" && id != du) {
			return nil, &oauthErr{http.StatusUnauthorized, "invalid_client", "Client authentication failed"}
		}
		id, secret = du, dp
	}
	if id == "" {
		return nil, badRequest("Missing required parameter: client_id")
	}
	c := s.model.Clients[id]
	if c == nil {
		return nil, &oauthErr{http.StatusUnauthorized, "invalid_client", "Unknown client"}
	}
	if !c.Public {
		a, b := sha256.Sum256([]byte(c.Secret)), sha256.Sum256([]byte(secret))
		if secret == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
			return nil, &oauthErr{http.StatusUnauthorized, "invalid_client", "Client authentication failed"}
		}
	}
	return c, nil
}

func (s *Server) clientFor(r *http.Request, p params, grant string) (*Client, *oauthErr) {
	c, err := s.authenticateClient(r, p)
	if err != nil {
		return nil, err
	}
	note(r, "client_id", c.ID)
	if !c.allows(grant) {
		return nil, &oauthErr{http.StatusForbidden, "unauthorized_client", fmt.Sprintf("Grant type '%s' not allowed for the client.", grant)}
	}
	return c, nil
}

// userAudience resolves the audience of a user token; "" means a token for /userinfo only.
func (s *Server) userAudience(aud string) (*API, *oauthErr) {
	if aud == "" {
		aud = s.model.DefaultAud
	}
	if aud == "" {
		return nil, nil
	}
	if api := s.model.APIs[aud]; api != nil {
		return api, nil
	}
	if aud == s.model.MgmtAud {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", "devtenant issues Management API tokens to machine-to-machine clients only"}
	}
	return nil, &oauthErr{http.StatusForbidden, "access_denied", "Service not found: " + truncate(aud, 200)}
}

// grantedScope is Auth0's RBAC rule: OIDC scopes pass; API scopes only if the
// API defines them and, with policies enforced, the user holds the permission.
func grantedScope(requested []string, api *API, perms []string, offline bool) []string {
	out := []string{}
	for _, sc := range requested {
		if slices.Contains(out, sc) {
			continue
		}
		switch {
		case sc == "offline_access":
			if offline {
				out = append(out, sc)
			}
		case slices.Contains(oidcScopes, sc):
			out = append(out, sc)
		case api != nil && api.hasScope(sc) && (!api.EnforcePolicies || slices.Contains(perms, sc)):
			out = append(out, sc)
		}
	}
	return out
}

// permissionsOf returns the user's permissions for api in the API's scope order.
func (s *Server) permissionsOf(u userRecord, api *API) []string {
	out := []string{}
	if api == nil {
		return out
	}
	for _, sc := range api.Scopes {
		for _, rn := range u.Roles {
			if role := s.model.Roles[rn]; role != nil && slices.Contains(role.Permissions[api.Identifier], sc) {
				out = append(out, sc)
				break
			}
		}
	}
	return out
}

// userTokens issues the access token (and id/refresh tokens as the scopes
// allow) for u. family continues a refresh family; code binds a new family to
// the authorization code that started it.
func (s *Server) userTokens(c *Client, u userRecord, api *API, scope, gty, family, nonce, code string, org *Organization) (*tokenResponse, *oauthErr) {
	perms := s.permissionsOf(u, api)
	offline := c.allows(GrantRefreshToken) && (api == nil || api.OfflineAccess)
	scopes := grantedScope(strings.Fields(scope), api, perms, offline)
	now := s.now()
	roles := slices.Clone(u.Roles)
	if roles == nil {
		roles = []string{}
	}
	claims := accessClaims{
		Roles: &roles,
		Iss:   s.model.Issuer, Sub: u.ID, Iat: now.Unix(),
		Scope: strings.Join(scopes, " "), Azp: c.ID, Gty: gty,
	}
	claims.OrgID, claims.OrgName = s.orgClaims(org)
	userinfoAud := s.model.Issuer + "userinfo"
	switch {
	case api == nil:
		claims.Aud = userinfoAud
	case slices.Contains(scopes, "openid"):
		claims.Aud = []string{api.Identifier, userinfoAud}
	default:
		claims.Aud = api.Identifier
	}
	resp, err := s.signAccess(claims, api, perms)
	if err != nil {
		return nil, err
	}
	if slices.Contains(scopes, "openid") {
		idc := map[string]any{"iss": s.model.Issuer, "sub": u.ID, "aud": c.ID, "iat": now.Unix(),
			"exp": now.Unix() + int64(c.IDTokenTTL), RolesClaim: roles}
		if nonce != "" {
			idc["nonce"] = nonce
		}
		if claims.OrgID != "" {
			idc["org_id"] = claims.OrgID
		}
		if claims.OrgName != "" {
			idc["org_name"] = claims.OrgName
		}
		id, err := s.keys.sign(profileClaims(u, scopes, idc))
		if err != nil {
			return nil, errSign
		}
		resp.IDToken = id
	}
	if slices.Contains(scopes, "offline_access") {
		aud := ""
		if api != nil {
			aud = api.Identifier
		}
		resp.RefreshToken = s.store.newRefresh(family, refreshRecord{clientID: c.ID, userID: u.ID, audience: aud, scope: claims.Scope, orgID: claims.OrgID})
		if code != "" {
			if rec, ok := s.store.peekRefresh(resp.RefreshToken); ok {
				s.store.bindCodeFamily(code, rec.family)
			}
		}
	}
	return resp, nil
}

func (s *Server) clientToken(c *Client, aud, scope string, org *Organization) (*tokenResponse, *oauthErr) {
	api := s.model.APIs[aud]
	if api == nil && aud != s.model.MgmtAud {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", "Service not found: " + truncate(aud, 200)}
	}
	granted, ok := c.Grants[aud]
	if !ok {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", fmt.Sprintf(
			"Client is not authorized to access %q. You need to create a \"client-grant\" associated to this API. See: https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants", aud)}
	}
	scopes := slices.Clone(granted)
	if requested := strings.Fields(scope); len(requested) > 0 {
		scopes = scopes[:0]
		for _, sc := range requested {
			if slices.Contains(granted, sc) && !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
	}
	claims := accessClaims{Iss: s.model.Issuer, Sub: c.ID + "@clients", Aud: aud, Iat: s.now().Unix(),
		Scope: strings.Join(scopes, " "), Azp: c.ID, Gty: "client-credentials"}
	claims.OrgID, claims.OrgName = s.orgClaims(org)
	return s.signAccess(claims, api, slices.Clone(scopes))
}

var errSign = &oauthErr{http.StatusInternalServerError, "server_error", "Could not sign the token"}

// signAccess signs an access token for api (nil: /userinfo or the Management
// API), which sets its lifetime and whether it carries perms.
func (s *Server) signAccess(claims accessClaims, api *API, perms []string) (*tokenResponse, *oauthErr) {
	lifetime := 86400
	if api != nil {
		lifetime = api.TokenLifetime
		if api.withPermissions() {
			claims.Permissions = &perms
		}
	}
	claims.Exp = claims.Iat + int64(lifetime)
	at, err := s.signAccessToken(api, claims)
	if err != nil {
		return nil, errSign
	}
	return &tokenResponse{AccessToken: at, Scope: claims.Scope, ExpiresIn: lifetime, TokenType: "Bearer"}, nil
}

// revoke revokes a refresh token's family (RFC 7009); unknown tokens are not an error.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request, p params) *oauthErr {
	c, err := s.authenticateClient(r, p)
	if err != nil {
		return err
	}
	tok := p.get("token")
	if tok == "" {
		return badRequest("Missing required parameter: token")
	}
	s.store.revokeRefresh(tok, c.ID)
	w.WriteHeader(http.StatusOK)
	return nil
}
