package tenant

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
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
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	p, perr := readParams(r)
	if perr != nil {
		note(r, "error", perr.code)
		perr.write(w)
		return
	}
	grant := p.get("grant_type")
	note(r, "grant_type", grant)
	var (
		resp *tokenResponse
		err  *oauthErr
	)
	switch grant {
	case "":
		err = badRequest("Missing required parameter: grant_type")
	case GrantPassword, GrantPasswordRealm:
		resp, err = s.passwordGrant(r, p, grant)
	case GrantClientCredentials:
		resp, err = s.clientCredentialsGrant(r, p)
	case GrantRefreshToken:
		resp, err = s.refreshGrant(r, p)
	case GrantAuthorizationCode:
		resp, err = s.codeGrant(r, p)
	default:
		err = &oauthErr{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("Unsupported grant type: %s", truncate(grant, 100))}
	}
	if err != nil {
		note(r, "error", err.code)
		err.write(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
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

func (s *Server) passwordGrant(r *http.Request, p params, grant string) (*tokenResponse, *oauthErr) {
	c, err := s.clientFor(r, p, grant)
	if err != nil {
		return nil, err
	}
	username, password := p.get("username"), p.get("password")
	if grant == GrantPasswordRealm {
		switch realm := p.get("realm"); realm {
		case "":
			return nil, badRequest("Missing required parameter: realm")
		case Connection:
		default:
			return nil, &oauthErr{http.StatusBadRequest, "invalid_request", "Unknown realm: " + truncate(realm, 100)}
		}
	}
	if username == "" {
		return nil, badRequest("Missing required parameter: username")
	}
	if password == "" {
		return nil, badRequest("Missing required parameter: password")
	}
	api, err := s.userAudience(p.get("audience"))
	if err != nil {
		return nil, err
	}
	u, ok := s.store.userByEmail(strings.ToLower(strings.TrimSpace(username)))
	if !ok || !checkPassword(u, password) {
		return nil, &oauthErr{http.StatusForbidden, "invalid_user_password", "Wrong email or password."}
	}
	note(r, "sub", u.ID)
	if u.Blocked {
		return nil, &oauthErr{http.StatusUnauthorized, "unauthorized", "user is blocked"}
	}
	s.store.recordLogin(u.ID)
	return s.userTokens(c, u, api, p.get("scope"), "password", "", "", "")
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
func (s *Server) userTokens(c *Client, u userRecord, api *API, scope, gty, family, nonce, code string) (*tokenResponse, *oauthErr) {
	perms := s.permissionsOf(u, api)
	offline := c.allows(GrantRefreshToken) && (api == nil || api.OfflineAccess)
	scopes := grantedScope(strings.Fields(scope), api, perms, offline)
	now := s.now()
	lifetime := 86400
	roles := slices.Clone(u.Roles)
	if roles == nil {
		roles = []string{}
	}
	claims := accessClaims{
		Roles: &roles,
		Iss:   s.model.Issuer, Sub: u.ID, Iat: now.Unix(),
		Scope: strings.Join(scopes, " "), Azp: c.ID, Gty: gty,
	}
	userinfoAud := s.model.Issuer + "userinfo"
	switch {
	case api == nil:
		claims.Aud = userinfoAud
	case slices.Contains(scopes, "openid"):
		claims.Aud = []string{api.Identifier, userinfoAud}
	default:
		claims.Aud = api.Identifier
	}
	if api != nil {
		lifetime = api.TokenLifetime
		if api.Dialect == "access_token_authz" {
			claims.Permissions = &perms
		}
	}
	claims.Exp = now.Unix() + int64(lifetime)
	at, err := s.keys.sign(claims)
	if err != nil {
		return nil, &oauthErr{http.StatusInternalServerError, "server_error", "Could not sign the token"}
	}
	resp := &tokenResponse{AccessToken: at, Scope: claims.Scope, ExpiresIn: lifetime, TokenType: "Bearer"}
	if slices.Contains(scopes, "openid") {
		idc := map[string]any{"iss": s.model.Issuer, "sub": u.ID, "aud": c.ID, "iat": now.Unix(),
			"exp": now.Unix() + int64(c.IDTokenTTL), RolesClaim: roles}
		if nonce != "" {
			idc["nonce"] = nonce
		}
		if resp.IDToken, err = s.keys.sign(profileClaims(u, scopes, idc)); err != nil {
			return nil, &oauthErr{http.StatusInternalServerError, "server_error", "Could not sign the token"}
		}
	}
	if slices.Contains(scopes, "offline_access") {
		aud := ""
		if api != nil {
			aud = api.Identifier
		}
		resp.RefreshToken = s.store.newRefresh(family, refreshRecord{clientID: c.ID, userID: u.ID, audience: aud, scope: claims.Scope})
		if code != "" {
			if rec, ok := s.store.peekRefresh(resp.RefreshToken); ok {
				s.store.bindCodeFamily(code, rec.family)
			}
		}
	}
	return resp, nil
}

func (s *Server) clientCredentialsGrant(r *http.Request, p params) (*tokenResponse, *oauthErr) {
	c, err := s.clientFor(r, p, GrantClientCredentials)
	if err != nil {
		return nil, err
	}
	aud := p.get("audience")
	if aud == "" {
		aud = s.model.DefaultAud
	}
	if aud == "" {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", "No audience parameter was provided, and no default audience has been configured"}
	}
	note(r, "audience", truncate(aud, 200))
	resp, cerr := s.clientToken(c, aud, p.get("scope"))
	if cerr != nil {
		return nil, cerr
	}
	return resp, nil
}

func (s *Server) clientToken(c *Client, aud, scope string) (*tokenResponse, *oauthErr) {
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
	now := s.now()
	lifetime := 86400
	claims := accessClaims{Iss: s.model.Issuer, Sub: c.ID + "@clients", Aud: aud, Iat: now.Unix(),
		Scope: strings.Join(scopes, " "), Azp: c.ID, Gty: "client-credentials"}
	if api != nil {
		lifetime = api.TokenLifetime
		if api.Dialect == "access_token_authz" {
			perms := slices.Clone(scopes)
			claims.Permissions = &perms
		}
	}
	claims.Exp = now.Unix() + int64(lifetime)
	at, err := s.keys.sign(claims)
	if err != nil {
		return nil, &oauthErr{http.StatusInternalServerError, "server_error", "Could not sign the token"}
	}
	return &tokenResponse{AccessToken: at, Scope: claims.Scope, ExpiresIn: lifetime, TokenType: "Bearer"}, nil
}

var errInvalidRefresh = &oauthErr{http.StatusForbidden, "invalid_grant", "Unknown or invalid refresh token."}

func (s *Server) refreshGrant(r *http.Request, p params) (*tokenResponse, *oauthErr) {
	c, err := s.clientFor(r, p, GrantRefreshToken)
	if err != nil {
		return nil, err
	}
	tok := p.get("refresh_token")
	if tok == "" {
		return nil, badRequest("Missing required parameter: refresh_token")
	}
	rec, ok := s.store.useRefresh(tok, c.RotateRefresh, c.ID)
	if !ok {
		return nil, errInvalidRefresh
	}
	u, ok := s.store.userByID(rec.userID)
	if !ok {
		return nil, errInvalidRefresh
	}
	note(r, "sub", u.ID)
	if u.Blocked {
		return nil, &oauthErr{http.StatusUnauthorized, "unauthorized", "user is blocked"}
	}
	scope := rec.scope
	if req := p.get("scope"); req != "" {
		orig := strings.Fields(rec.scope)
		for _, sc := range strings.Fields(req) {
			if !slices.Contains(orig, sc) {
				return nil, &oauthErr{http.StatusForbidden, "invalid_scope", "Scope " + truncate(sc, 100) + " was not granted with the refresh token"}
			}
		}
		scope = req
		if !slices.Contains(strings.Fields(scope), "offline_access") && c.RotateRefresh {
			scope += " offline_access" // the family must continue, or rotation would strand the client
		}
	}
	var api *API
	if rec.audience != "" {
		api = s.model.APIs[rec.audience]
	}
	family := rec.family
	if !c.RotateRefresh {
		scope = strings.Join(slices.DeleteFunc(strings.Fields(scope), func(s string) bool { return s == "offline_access" }), " ")
	}
	return s.userTokens(c, u, api, scope, "refresh_token", family, "", "")
}

func (s *Server) codeGrant(r *http.Request, p params) (*tokenResponse, *oauthErr) {
	c, err := s.clientFor(r, p, GrantAuthorizationCode)
	if err != nil {
		return nil, err
	}
	code := p.get("code")
	if code == "" {
		return nil, badRequest("Missing required parameter: code")
	}
	ac, ok := s.store.takeCode(code)
	if !ok || ac.clientID != c.ID {
		return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "Invalid authorization code"}
	}
	if ac.redirectURI != p.get("redirect_uri") {
		return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "The redirect_uri MUST match the one used in /authorize"}
	}
	verifier := p.get("code_verifier")
	if ac.challenge != "" {
		if verifier == "" {
			return nil, badRequest("Missing required parameter: code_verifier")
		}
		if !verifyPKCE(ac.challenge, ac.challengeMethod, verifier) {
			return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "Failed to verify code verifier"}
		}
	} else if verifier != "" {
		return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "Failed to verify code verifier"}
	}
	u, ok := s.store.userByID(ac.userID)
	if !ok {
		return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "Invalid authorization code"}
	}
	note(r, "sub", u.ID)
	if u.Blocked {
		return nil, &oauthErr{http.StatusUnauthorized, "unauthorized", "user is blocked"}
	}
	var api *API
	if ac.audience != "" {
		api = s.model.APIs[ac.audience]
	}
	return s.userTokens(c, u, api, ac.scope, "", "", ac.nonce, code)
}

// verifyPKCE checks RFC 7636; the verifier is 43–128 unreserved characters.
func verifyPKCE(challenge, method, verifier string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for _, ch := range verifier {
		if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || strings.ContainsRune("-._~", ch)) {
			return false
		}
	}
	want := verifier
	if method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

// --- in-process issuance (devstack, component tests) ----------------------------

// ErrUnknown is returned by the Issue methods for an unknown user, client or audience.
var ErrUnknown = errors.New("devtenant: unknown user, client or audience")

// IssueUserToken returns an access token for the dev user with email, as the
// password grant of the first-party CLI client would. An empty audience means
// the tenant's API when it has exactly one; an empty scope asks for
// "openid profile email" and every permission of the API (RBAC then keeps
// only the user's). A blocked user gets an error.
func (s *Server) IssueUserToken(email, audience, scope string) (string, error) {
	u, ok := s.store.userByEmail(strings.ToLower(strings.TrimSpace(email)))
	if !ok {
		return "", fmt.Errorf("%w: user %q", ErrUnknown, email)
	}
	if u.Blocked {
		return "", fmt.Errorf("devtenant: user %s is blocked", email)
	}
	if audience == "" && len(s.model.APIs) == 1 {
		for id := range s.model.APIs {
			audience = id
		}
	}
	api, oerr := s.userAudience(audience)
	if oerr != nil {
		return "", fmt.Errorf("%w: %s", ErrUnknown, oerr.desc)
	}
	if scope == "" {
		scope = "openid profile email"
		if api != nil {
			scope += " " + strings.Join(api.Scopes, " ")
		}
	}
	c := s.cliClient()
	if c == nil {
		return "", fmt.Errorf("%w: no client with the password grant", ErrUnknown)
	}
	resp, oerr := s.userTokens(c, u, api, scope, "password", "", "", "")
	if oerr != nil {
		return "", errors.New("devtenant: " + oerr.desc)
	}
	return resp.AccessToken, nil
}

// cliClient is the client that in-process user tokens are issued to (azp).
func (s *Server) cliClient() *Client {
	if c := s.model.Clients["authmesh-cli"]; c != nil && c.allows(GrantPassword) {
		return c
	}
	for _, id := range sortedKeys(s.model.Clients) {
		if c := s.model.Clients[id]; c.allows(GrantPassword) {
			return c
		}
	}
	return nil
}

// IssueClientToken returns a client-credentials token for clientID with all
// the scopes its grant for audience allows. An empty audience means the
// client's only grant.
func (s *Server) IssueClientToken(clientID, audience string) (string, error) {
	c := s.model.Clients[clientID]
	if c == nil {
		return "", fmt.Errorf("%w: client %q", ErrUnknown, clientID)
	}
	if audience == "" {
		if len(c.Grants) != 1 {
			return "", fmt.Errorf("devtenant: client %s has %d client grants; name the audience", clientID, len(c.Grants))
		}
		for a := range c.Grants {
			audience = a
		}
	}
	resp, oerr := s.clientToken(c, audience, "")
	if oerr != nil {
		return "", errors.New("devtenant: " + oerr.desc)
	}
	return resp.AccessToken, nil
}
