package authz

import "slices"

// Policy says who may call a route or NATS endpoint.
//
// User tokens are authorized by their permissions claim, M2M tokens by their
// scope claim (a user token's scope never grants what its permissions lack).
// The zero Policy denies everything; build one with Public, RequireAll or
// RequireAny.
type Policy struct {
	public  bool
	allOf   []string
	anyOf   []string
	clients []string // allowed azp values for M2M tokens; empty = any client
	noM2M   bool
	noUsers bool
	set     bool
}

// Public declares a route that needs no token.
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

// Authenticated requires only a valid token.
func Authenticated() Policy { return Policy{set: true} }

// Clients restricts M2M callers to the given client ids (azp).
func (p Policy) Clients(azp ...string) Policy {
	p.clients = append(slices.Clone(p.clients), azp...)
	return p
}

// UsersOnly refuses M2M tokens.
func (p Policy) UsersOnly() Policy { p.noM2M = true; return p }

// M2MOnly refuses user tokens.
func (p Policy) M2MOnly() Policy { p.noUsers = true; return p }

// IsPublic reports whether the policy needs no token.
func (p Policy) IsPublic() bool { return p.public }

// Declared reports whether the policy was built by one of this package's
// constructors (the zero Policy is not declared and denies everything).
func (p Policy) Declared() bool { return p.set }

// Names returns every permission or scope the policy mentions.
func (p Policy) Names() []string {
	return append(slices.Clone(p.allOf), p.anyOf...)
}

// Authorize checks claims against the policy. It returns nil, or an *Error
// with CodeInsufficientScope naming what was needed, or ErrNoPolicy for the
// zero Policy.
func (p Policy) Authorize(c *Claims) error {
	if !p.set {
		return ErrNoPolicy
	}
	if p.public {
		return nil
	}
	if c == nil {
		return ErrMissingToken
	}
	m2m := c.IsM2M()
	if m2m && (p.noM2M || (len(p.clients) > 0 && !slices.Contains(p.clients, c.AZP))) {
		return &Error{Code: CodeInsufficientScope, Reason: "client_not_allowed", Description: "client not allowed", Needed: p.Names()}
	}
	if !m2m && p.noUsers {
		return &Error{Code: CodeInsufficientScope, Reason: "user_not_allowed", Description: "only service clients may call this", Needed: p.Names()}
	}
	has := c.HasPermission
	if m2m {
		has = c.HasScope
	}
	for _, v := range p.allOf {
		if !has(v) {
			return insufficient(p.allOf)
		}
	}
	if len(p.anyOf) > 0 && !slices.ContainsFunc(p.anyOf, has) {
		return insufficient(p.anyOf)
	}
	return nil
}
