package authztest

import (
	"maps"
	"testing"
)

// RFC9068Token signs DefaultClaims overlaid with extra as Auth0 does for an
// API whose token dialect is rfc9068_profile_authz: header typ at+jwt,
// client_id instead of azp, a jti, no gty (an Auth0 extension the profile
// drops).
func (i *Issuer) RFC9068Token(tb testing.TB, extra Claims) string {
	tb.Helper()
	k := i.SigningKey()
	return Sign(tb, k.Private, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": k.ID}, ToRFC9068(i.DefaultClaims().With(extra)))
}

// RFC9068M2MToken is M2MToken in the RFC 9068 profile: without gty, the
// token is a client's only by its sub (<client_id>@clients).
func (i *Issuer) RFC9068M2MToken(tb testing.TB, clientID, scope string) string {
	tb.Helper()
	return i.RFC9068Token(tb, Claims{
		"sub": clientID + "@clients", "azp": clientID,
		"scope": scope, "aud": Audience, "permissions": nil, "https://authmesh.dev/roles": nil,
	})
}

// ToRFC9068 returns a copy of an Auth0-profile payload in the RFC 9068 profile: azp
// moved to client_id, gty dropped, a jti added when there is none.
func ToRFC9068(c Claims) Claims {
	out := maps.Clone(c)
	if azp, ok := out["azp"]; ok {
		if _, has := out["client_id"]; !has {
			out["client_id"] = azp
		}
		delete(out, "azp")
	}
	delete(out, "gty")
	if _, ok := out["jti"]; !ok {
		out["jti"] = randomID()
	}
	return out
}
