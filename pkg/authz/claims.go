package authz

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// DefaultRolesClaim is the namespaced custom claim that carries a user's roles.
const DefaultRolesClaim = "https://authmesh.dev/roles"

// Claims is what a verified access token says about its caller.
type Claims struct {
	Subject   string    // sub: "auth0|..." for users, "<client_id>@clients" for M2M
	Issuer    string    // iss, exactly as accepted
	Audience  []string  // aud, always as a list
	IssuedAt  time.Time // iat (zero when absent)
	ExpiresAt time.Time // exp (always present on a verified token)
	KeyID     string    // kid of the key that signed the token

	Scopes      Scopes   // scope, split on spaces
	Permissions []string // permissions (RBAC, token dialect access_token_authz)
	Roles       []string // the namespaced roles claim
	AZP         string   // azp: the client the token was issued to (Auth0 profile)
	ClientID    string   // client_id: the same, in the RFC 9068 profile (which has no azp)
	JTI         string   // jti: the token's id (RFC 9068 profile only)
	GTY         []string // gty, parsed loosely (string or array)
	OrgID       string   // org_id (Auth0 Organizations): the organization the token was issued for
	OrgName     string   // org_name, when the tenant adds it (allow_organization_name_in_authentication_api)
	JKT         string   // cnf.jkt: the thumbprint of the key a DPoP-bound token is bound to (RFC 9449 §6.1)

	// Transaction tokens only (TxnValidator): txn, req_wl and tctx. For them
	// Scopes and Permissions are both the token's narrowed scope.
	Txn                string          // the transaction id, the same along the call chain
	RequestingWorkload string          // req_wl: the workload that asked for the token
	TxnContext         json.RawMessage // tctx: immutable context of the transaction
	Event              *EventBinding   // tctx.evt: the one event the token may carry (nil: none)

	// tokenSum is the SHA-256 of the access token these claims were
	// verified from, when the Validator took it (its cache key): a DPoP
	// proof's ath is compared with it rather than hashing the token again.
	tokenSum [32]byte
	summed   bool
	// subHash is SubjectHash(Subject), set before the validators cache the
	// claims: a cached token's decision is recorded (and logged) on every
	// request, and need not hash the subject each time.
	subHash string
}

// SubjectHash is authz.SubjectHash(c.Subject): computed once for claims a
// validator cached, else on each call.
func (c *Claims) SubjectHash() string {
	if c.subHash != "" {
		return c.subHash
	}
	return SubjectHash(c.Subject)
}

// IsM2M reports whether the token was issued to a machine through the
// client-credentials grant rather than to a user.
func (c *Claims) IsM2M() bool {
	if slices.Contains(c.GTY, "client-credentials") {
		return true
	}
	return strings.HasSuffix(c.Subject, "@clients")
}

// Client returns the client the token was issued to, whichever Auth0 access
// token profile it follows: azp (Auth0 profile) or else client_id (RFC 9068
// profile). Every check of who the client is reads this, never AZP alone, so
// an API switched to the RFC 9068 profile keeps admitting its M2M callers.
func (c *Claims) Client() string {
	if c.AZP != "" {
		return c.AZP
	}
	return c.ClientID
}

// IsTxn reports whether the claims come from a transaction token.
func (c *Claims) IsTxn() bool { return c.Txn != "" }

// HasPermission reports whether the permissions claim contains p.
func (c *Claims) HasPermission(p string) bool { return slices.Contains(c.Permissions, p) }

// HasScope reports whether the scope claim contains s.
func (c *Claims) HasScope(s string) bool { return c.Scopes.Has(s) }

// HasRole reports whether the roles claim contains r.
func (c *Claims) HasRole(r string) bool { return slices.Contains(c.Roles, r) }

// Scopes is the set of values of a space-delimited scope claim.
type Scopes map[string]struct{}

// ParseScopes splits a space-delimited scope string into a set.
func ParseScopes(s string) Scopes {
	n := 0
	for range strings.FieldsSeq(s) {
		n++
	}
	set := make(Scopes, n)
	for f := range strings.FieldsSeq(s) {
		set[f] = struct{}{}
	}
	return set
}

// Has reports whether the set contains s.
func (s Scopes) Has(v string) bool {
	_, ok := s[v]
	return ok
}

// List returns the scopes sorted.
func (s Scopes) List() []string {
	out := make([]string, 0, len(s))
	for v := range s {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

type ctxKey int

const identityKey ctxKey = iota

// identity is what WithClaims stores: one context value for both, so that
// authenticating a request adds one allocation, not two.
type identity struct {
	claims *Claims
	token  string
	// proofJKT and proof are set when the middleware verified the request's
	// DPoP proof for the token (see DPoPVerifiedFromContext and
	// DPoPProofFromContext).
	proofJKT, proof string
}

// WithClaims returns a context carrying the verified claims and the raw token
// they came from (the token is kept so it can be propagated to other services;
// it is never logged by this package).
func WithClaims(ctx context.Context, c *Claims, token string) context.Context {
	return context.WithValue(ctx, identityKey, &identity{claims: c, token: token})
}

// ClaimsFromContext returns the verified claims stored by WithClaims or by the
// Echo middleware (which stores them in the request's context).
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	id, ok := ctx.Value(identityKey).(*identity)
	if !ok || id.claims == nil {
		return nil, false
	}
	return id.claims, true
}

// TokenFromContext returns the raw bearer token stored by WithClaims.
func TokenFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(identityKey).(*identity)
	if !ok || id.token == "" {
		return "", false
	}
	return id.token, true
}

// ClaimsFromEcho returns the verified claims of the request being served.
func ClaimsFromEcho(c echo.Context) (*Claims, bool) {
	return ClaimsFromContext(c.Request().Context())
}
