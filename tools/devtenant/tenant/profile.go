package tenant

// Auth0's access token profiles (token_dialect) and its Resource Parameter
// Compatibility Profile (RFC 8707 resource as another name for audience).

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// tokenDialects are the resource servers' token_dialect values, as Auth0
// spells them: the Auth0 profile and the RFC 9068 profile, each with an
// _authz form whose tokens carry the permissions claim.
var tokenDialects = []string{"access_token", "access_token_authz", "rfc9068_profile", "rfc9068_profile_authz"}

// withPermissions reports whether the API's tokens carry permissions.
func (a *API) withPermissions() bool { return strings.HasSuffix(a.Dialect, "_authz") }

// rfc9068 reports whether the API's tokens follow RFC 9068.
func (a *API) rfc9068() bool { return strings.HasPrefix(a.Dialect, "rfc9068_profile") }

// signAccessToken signs an access token for api in its dialect's profile.
// The RFC 9068 profile (Auth0's "JWT Access Tokens Profiles") differs from
// the Auth0 profile in three claims and the header: typ at+jwt, client_id
// instead of azp, a jti, and no gty. Everything else — permissions, roles,
// and whatever other claims the token carries — is the same.
func (s *Server) signAccessToken(api *API, claims accessClaims) (string, error) {
	if api == nil || !api.rfc9068() {
		return s.keys.sign(claims)
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	delete(m, "azp")
	delete(m, "gty")
	m["client_id"] = claims.Azp
	if m["jti"], err = newJTI(); err != nil {
		return "", err
	}
	return s.keys.signTyped("at+jwt", m)
}

// newJTI is a token id as Auth0's look: 22 URL-safe characters, 128 bits.
func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// audienceParam is the API a token request or an authorization request
// names: audience, else — with the tenant's resource_parameter_profile set
// to compatibility — resource (RFC 8707). audience wins when both are sent,
// as in Auth0; without the profile resource is ignored.
func (s *Server) audienceParam(get func(string) string) string {
	if aud := get("audience"); aud != "" || !s.model.ResourceParam {
		return aud
	}
	return get("resource")
}

// resourceParameterProfile reads tenant.resource_parameter_profile:
// audience (Auth0's default) or compatibility.
func (l *loader) resourceParameterProfile(tenant map[string]any) {
	switch v := tenant["resource_parameter_profile"]; v {
	case nil, "audience":
	case "compatibility":
		l.m.ResourceParam = true
	default:
		l.bad(l.tenantPath, "tenant.resource_parameter_profile %q; fix: use audience or compatibility", fmt.Sprint(v))
	}
}
