package authz

import "slices"

// Reasons of a CodeInsufficientScope failure for a token of a kind the
// policy does not admit. They are stable: metrics labels, logs and the 403's
// error_description carry them (docs/contract.md §5).
const (
	// ReasonUsersOnly: an M2M token on a policy that admits users only.
	ReasonUsersOnly = "users_only"
	// ReasonClientNotAllowed: an M2M token whose azp is not one of the
	// policy's clients.
	ReasonClientNotAllowed = "client_not_allowed"
	// ReasonClientsOnly: a user token on a policy that admits named clients only.
	ReasonClientsOnly = "clients_only"
	// ReasonMissingPermission: the kind of token is admitted, a permission
	// (user) or scope (M2M) is missing.
	ReasonMissingPermission = "missing_permission"
	// ReasonOrgRequired: the kind of token is admitted, but the policy
	// requires an organization (RequireOrg) and the token has no org_id.
	ReasonOrgRequired = "org_required"
)

// Policy says who may call a route, NATS endpoint or consumer, and with
// which permissions.
//
// Who: every policy but Public states it explicitly — Users() admits user
// tokens, Clients(ids...) admits M2M tokens whose azp is one of ids; both
// may be combined. A policy that admits neither refuses every token, and the
// start-up checks (Registry.Check, natsauth) refuse to run with one.
//
// What: user tokens are authorized by their permissions claim, M2M tokens by
// their scope claim (a user token's scope never grants what its permissions
// lack). The zero Policy denies everything; build one with Public,
// RequireAll, RequireAny or Authenticated, then say who:
//
//	authz.RequireAll("refund:invoices").Users()
//	authz.RequireAll("cancel:orders").Users().Clients("orders-service")
type Policy struct {
	public  bool
	allOf   []string
	anyOf   []string
	users   bool
	clients []string // admitted azp values of M2M tokens
	org     bool     // RequireOrg: the token must carry org_id
	set     bool
	dpop    bool // DPoP-bound tokens with proofs only (RFC 9449)
}

// Public declares a route that needs no token (and so no who).
func Public() Policy { return Policy{public: true, set: true} }

// RequireAll requires every one of perms: in permissions for user tokens, in
// scope for M2M tokens.
func RequireAll(perms ...string) Policy {
	return Policy{allOf: slices.Clone(perms), set: true}
}

// RequireAny requires at least one of perms.
func RequireAny(perms ...string) Policy {
	return Policy{anyOf: slices.Clone(perms), set: true}
}

// Authenticated requires only a valid token (of an admitted kind).
func Authenticated() Policy { return Policy{set: true} }

// Users admits user tokens.
func (p Policy) Users() Policy { p.users = true; return p }

// Clients admits M2M tokens whose client (Claims.Client: azp, or client_id in
// the RFC 9068 profile) is one of azp. Empty ids are ignored:
// they would name no client.
func (p Policy) Clients(azp ...string) Policy {
	p.clients = slices.Clone(p.clients)
	for _, id := range azp {
		if id != "" && !slices.Contains(p.clients, id) {
			p.clients = append(p.clients, id)
		}
	}
	return p
}

// RequireOrg additionally requires a token issued for an Auth0
// Organization (an org_id claim, user and M2M tokens alike); one without is
// refused 403 with ReasonOrgRequired. Which organization owns the data a
// request touches is the use case's check (compare Claims.OrgID with the
// resource's), not the policy's. It has no effect on Public.
//
//	authz.RequireAll("read:reports").Users().RequireOrg()
func (p Policy) RequireOrg() Policy { p.org = true; return p }

// RequiresOrg reports whether the policy requires an organization.
func (p Policy) RequiresOrg() bool { return p.org }

// RequireDPoP admits only DPoP-bound tokens presented with a valid proof
// (the middleware needs MiddlewareConfig.DPoP, not disabled).
func (p Policy) RequireDPoP() Policy { p.dpop = true; return p }

// DPoPRequired reports whether the policy admits DPoP-bound tokens only.
func (p Policy) DPoPRequired() bool { return p.dpop }

// IsPublic reports whether the policy needs no token.
func (p Policy) IsPublic() bool { return p.public }

// Declared reports whether the policy was built by one of this package's
// constructors (the zero Policy is not declared and denies everything).
func (p Policy) Declared() bool { return p.set }

// SaysWho reports whether the policy is public or admits users or named
// clients: what the start-up checks require of every policy.
func (p Policy) SaysWho() bool { return p.set && (p.public || p.users || len(p.clients) > 0) }

// AdmitsUsers reports whether user tokens are admitted.
func (p Policy) AdmitsUsers() bool { return p.users }

// ClientIDs returns the admitted M2M client ids (azp).
func (p Policy) ClientIDs() []string { return slices.Clone(p.clients) }

// Names returns every permission or scope the policy mentions.
func (p Policy) Names() []string {
	return append(slices.Clone(p.allOf), p.anyOf...)
}

// Authorize checks claims against the policy. It returns nil, or an *Error
// with CodeInsufficientScope — Reason ReasonUsersOnly, ReasonClientNotAllowed
// or ReasonClientsOnly when the kind of token is not admitted,
// ReasonOrgRequired for a token without org_id on a RequireOrg policy,
// ReasonMissingPermission naming what was needed otherwise — or ErrNoPolicy
// for the zero Policy.
func (p Policy) Authorize(c *Claims) error {
	switch p.check(c) {
	case allowed:
		return nil
	case noPolicy:
		return ErrNoPolicy
	case noToken:
		return ErrMissingToken
	case usersOnly:
		return notAdmitted(ReasonUsersOnly, "only user tokens may call this; service tokens are refused")
	case clientNotAllowed:
		return notAdmitted(ReasonClientNotAllowed, "this service client may not call this")
	case clientsOnly:
		return notAdmitted(ReasonClientsOnly, "only named service clients may call this; user tokens are refused")
	case orgRequired:
		return notAdmitted(ReasonOrgRequired, "this requires a token issued for an organization")
	case missingAllOf:
		return insufficient(p.allOf)
	default: // missingAnyOf
		return insufficient(p.anyOf)
	}
}

// Allows reports whether the policy admits c, as Authorize(c) == nil does,
// without building the refusal: for a check that only decides what a caller
// sees (an admin's read-all), on every request of those who may not.
func (p Policy) Allows(c *Claims) bool { return p.check(c) == allowed }

// denial is why check refuses a token, or allowed.
type denial uint8

const (
	allowed denial = iota
	noPolicy
	noToken
	usersOnly
	clientNotAllowed
	clientsOnly
	orgRequired
	missingAllOf
	missingAnyOf
)

// check is Authorize's decision, with nothing allocated.
func (p Policy) check(c *Claims) denial {
	if !p.set {
		return noPolicy
	}
	if p.public {
		return allowed
	}
	if c == nil {
		return noToken
	}
	m2m := c.IsM2M()
	switch {
	case m2m && len(p.clients) == 0:
		return usersOnly
	case m2m && !slices.Contains(p.clients, c.Client()):
		return clientNotAllowed
	case !m2m && !p.users:
		return clientsOnly
	}
	if p.org && c.OrgID == "" {
		return orgRequired
	}
	has := c.HasPermission
	if m2m {
		has = c.HasScope
	}
	for _, v := range p.allOf {
		if !has(v) {
			return missingAllOf
		}
	}
	if len(p.anyOf) > 0 && !slices.ContainsFunc(p.anyOf, has) {
		return missingAnyOf
	}
	return allowed
}
