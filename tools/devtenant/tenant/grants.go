package tenant

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
)

// Grant types, spelled as Auth0 spells them.
const (
	GrantPassword          = "password"
	GrantPasswordRealm     = "http://auth0.com/oauth/grant-type/password-realm"
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantAuthorizationCode = "authorization_code"
	GrantImplicit          = "implicit"
)

// grantType is one grant type devtenant knows. The token endpoint dispatches
// on it, discovery lists those it serves and the tenant file's clients may
// only name these; a new grant is one entry in grantTypes.
type grantType struct {
	name string
	// issue answers a token request of this grant type for a client already
	// authenticated and allowed the grant. nil: clients may declare the grant
	// (the Deploy CLI accepts it) but the token endpoint does not serve it.
	issue func(s *Server, r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr)
	// confidential grants need a client that can keep a secret.
	confidential bool
	// binding, for a grant whose credential (a refresh token, a code) can
	// be bound to a DPoP key, refuses a request without a proof by that key
	// (jkt: the request's proof's key, "" without one) before issue uses the
	// credential up.
	binding func(s *Server, p params, jkt string) *oauthErr
}

var grantTypes = []grantType{
	{name: GrantPassword, issue: (*Server).passwordGrant},
	{name: GrantPasswordRealm, issue: (*Server).passwordRealmGrant},
	{name: GrantClientCredentials, issue: (*Server).clientCredentialsGrant, confidential: true},
	{name: GrantRefreshToken, issue: (*Server).refreshGrant, binding: (*Server).refreshBinding},
	{name: GrantAuthorizationCode, issue: (*Server).codeGrant, binding: (*Server).codeBinding},
	{name: GrantImplicit},
}

// lookupGrant returns the grant type called name, or nil.
func lookupGrant(name string) *grantType {
	for i := range grantTypes {
		if grantTypes[i].name == name {
			return &grantTypes[i]
		}
	}
	return nil
}

// grantNames lists the grant types; served only keeps those the token endpoint answers.
func grantNames(served bool) []string {
	var out []string
	for _, g := range grantTypes {
		if !served || g.issue != nil {
			out = append(out, g.name)
		}
	}
	return out
}

func (s *Server) passwordRealmGrant(r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr) {
	switch realm := p.get("realm"); realm {
	case "":
		return nil, badRequest("Missing required parameter: realm")
	case Connection:
		return s.passwordGrant(r, c, p)
	default:
		return nil, &oauthErr{http.StatusBadRequest, "invalid_request", "Unknown realm: " + truncate(realm, 100)}
	}
}

func (s *Server) passwordGrant(r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr) {
	username, password := p.get("username"), p.get("password")
	if username == "" {
		return nil, badRequest("Missing required parameter: username")
	}
	if password == "" {
		return nil, badRequest("Missing required parameter: password")
	}
	api, err := s.userAudience(s.audienceParam(p.get))
	if err != nil {
		return nil, err
	}
	org, err := s.loginClientOrg(c, p.get("organization"))
	if err != nil {
		return nil, err
	}
	u, ok := s.store.userByEmail(strings.ToLower(strings.TrimSpace(username)))
	if !ok || !checkPassword(u, password) {
		return nil, &oauthErr{http.StatusForbidden, "invalid_user_password", "Wrong email or password."}
	}
	if err := activeUser(r, u); err != nil {
		return nil, err
	}
	if err := member(org, u.ID); err != nil {
		return nil, err
	}
	s.store.recordLogin(u.ID)
	return s.userTokens(c, u, api, p.get("scope"), GrantPassword, "", "", "", org)
}

func (s *Server) clientCredentialsGrant(r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr) {
	aud := s.audienceParam(p.get)
	if aud == "" {
		aud = s.model.DefaultAud
	}
	if aud == "" {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", "No audience parameter was provided, and no default audience has been configured"}
	}
	note(r, "audience", truncate(aud, 200))
	org, err := s.clientOrg(c, aud, p.get("organization"))
	if err != nil {
		return nil, err
	}
	return s.clientToken(c, aud, p.get("scope"), org)
}

var errInvalidRefresh = &oauthErr{http.StatusForbidden, "invalid_grant", "Unknown or invalid refresh token."}

func (s *Server) refreshGrant(r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr) {
	tok := p.get("refresh_token")
	if tok == "" {
		return nil, badRequest("Missing required parameter: refresh_token")
	}
	rec, ok := s.store.useRefresh(tok, c.RotateRefresh, c.ID)
	if !ok {
		return nil, errInvalidRefresh
	}
	u, err := s.userFor(r, rec.userID, errInvalidRefresh)
	if err != nil {
		return nil, err
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
	if !c.RotateRefresh {
		scope = strings.Join(slices.DeleteFunc(strings.Fields(scope), func(s string) bool { return s == "offline_access" }), " ")
	}
	org, err := s.keptOrg(rec.orgID, u.ID, errInvalidRefresh)
	if err != nil {
		return nil, err
	}
	return s.userTokens(c, u, s.model.APIs[rec.audience], scope, GrantRefreshToken, rec.family, "", "", org)
}

func (s *Server) codeGrant(r *http.Request, c *Client, p params) (*tokenResponse, *oauthErr) {
	code := p.get("code")
	if code == "" {
		return nil, badRequest("Missing required parameter: code")
	}
	errInvalidCode := &oauthErr{http.StatusForbidden, "invalid_grant", "Invalid authorization code"}
	ac, ok := s.store.takeCode(code)
	if !ok || ac.clientID != c.ID {
		return nil, errInvalidCode
	}
	if ac.redirectURI != p.get("redirect_uri") {
		return nil, &oauthErr{http.StatusForbidden, "invalid_grant", "The redirect_uri MUST match the one used in /authorize"}
	}
	errVerifier := &oauthErr{http.StatusForbidden, "invalid_grant", "Failed to verify code verifier"}
	verifier := p.get("code_verifier")
	if ac.challenge != "" {
		if verifier == "" {
			return nil, badRequest("Missing required parameter: code_verifier")
		}
		if !verifyPKCE(ac.challenge, ac.challengeMethod, verifier) {
			return nil, errVerifier
		}
	} else if verifier != "" {
		return nil, errVerifier
	}
	u, err := s.userFor(r, ac.userID, errInvalidCode)
	if err != nil {
		return nil, err
	}
	org, err := s.keptOrg(ac.orgID, u.ID, errInvalidCode)
	if err != nil {
		return nil, err
	}
	return s.userTokens(c, u, s.model.APIs[ac.audience], ac.scope, "", "", ac.nonce, code, org)
}

// userFor returns the user a refresh token or code was issued to, if still
// there (else unknown) and not blocked.
func (s *Server) userFor(r *http.Request, id string, unknown *oauthErr) (userRecord, *oauthErr) {
	u, ok := s.store.userByID(id)
	if !ok {
		return userRecord{}, unknown
	}
	return u, activeUser(r, u)
}

// activeUser notes who asks and refuses a blocked user.
func activeUser(r *http.Request, u userRecord) *oauthErr {
	note(r, "sub", u.ID)
	if u.Blocked {
		return &oauthErr{http.StatusUnauthorized, "unauthorized", "user is blocked"}
	}
	return nil
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
