package authz

import (
	"errors"
	"strings"
)

// AccessTokenType is the typ of an RFC 9068 access token ("application/at+jwt"
// in full), which Auth0 issues for an API whose token dialect is
// rfc9068_profile or rfc9068_profile_authz.
const AccessTokenType = "at+jwt"

// WithRequiredType makes the access-token Validator refuse tokens whose
// header typ is not typ (compared case-insensitively, the "application/"
// prefix optional: RFC 7515 §4.1.9). With WithRequiredType(AccessTokenType)
// only RFC 9068 tokens pass: an Auth0-profile token (typ JWT), an ID token or
// any other JWT signed by the tenant's keys is refused with reason "typ"
// (explicit typing, RFC 8725 §3.11). Without it both Auth0 profiles are
// accepted. The TxnValidator always requires its own type and ignores this.
func WithRequiredType(typ string) Option {
	return func(o *validatorOptions) error {
		typ = normalType(typ)
		if typ == "" {
			return errors.New("authz: empty token type")
		}
		o.typ = typ
		return nil
	}
}

// checkType enforces WithRequiredType; want is normalised, "" accepts any typ
// parseHeader let through.
func checkType(typ, want string) error {
	if want != "" && normalType(typ) != want {
		return invalid("typ", "the token is not of the required type", nil)
	}
	return nil
}

func normalType(typ string) string {
	typ = strings.ToLower(strings.TrimSpace(typ))
	return strings.TrimPrefix(typ, "application/")
}
