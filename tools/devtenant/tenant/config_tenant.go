package tenant

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// managementScopes are the Management API scopes a client grant may name.
var managementScopes = []string{
	"read:users", "update:users", "delete:users", "create:users",
	"read:users_app_metadata", "update:users_app_metadata", "create:users_app_metadata", "delete:users_app_metadata",
	"read:roles", "create:roles", "update:roles", "delete:roles",
	"read:role_members", "create:role_members", "delete:role_members",
	"read:signing_keys", "create:signing_keys", "update:signing_keys",
	"read:clients", "read:client_grants", "read:resource_servers",
}

// Deploy CLI YAML, only the fields devtenant acts on; the rest is ignored so a
// file written for a real tenant loads unchanged.
type tenantFile struct {
	Tenant          map[string]any   `yaml:"tenant"`
	ResourceServers []resourceServer `yaml:"resourceServers"`
	Roles           []roleDef        `yaml:"roles"`
	Clients         []clientDef      `yaml:"clients"`
	ClientGrants    []clientGrantDef `yaml:"clientGrants"`
	Organizations   []orgDef         `yaml:"organizations"`
}

type resourceServer struct {
	Name               string   `yaml:"name"`
	Identifier         string   `yaml:"identifier"`
	SigningAlg         string   `yaml:"signing_alg"`
	TokenLifetime      int      `yaml:"token_lifetime"`
	AllowOfflineAccess bool     `yaml:"allow_offline_access"`
	EnforcePolicies    bool     `yaml:"enforce_policies"`
	TokenDialect       string   `yaml:"token_dialect"`
	ProofOfPossession  *popYAML `yaml:"proof_of_possession"`
	Scopes             []struct {
		Value       string `yaml:"value"`
		Description string `yaml:"description"`
	} `yaml:"scopes"`
}

type roleDef struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Permissions []struct {
		PermissionName           string `yaml:"permission_name"`
		ResourceServerIdentifier string `yaml:"resource_server_identifier"`
	} `yaml:"permissions"`
}

type clientDef struct {
	Name                    string   `yaml:"name"`
	AppType                 string   `yaml:"app_type"`
	TokenEndpointAuthMethod string   `yaml:"token_endpoint_auth_method"`
	GrantTypes              []string `yaml:"grant_types"`
	Callbacks               []string `yaml:"callbacks"`
	AllowedOrigins          []string `yaml:"allowed_origins"`
	WebOrigins              []string `yaml:"web_origins"`
	JWTConfiguration        struct {
		Alg               string `yaml:"alg"`
		LifetimeInSeconds int    `yaml:"lifetime_in_seconds"`
	} `yaml:"jwt_configuration"`
	RefreshToken struct {
		RotationType string `yaml:"rotation_type"`
	} `yaml:"refresh_token"`
	OrganizationUsage string `yaml:"organization_usage"`
}

type clientGrantDef struct {
	ClientID             string   `yaml:"client_id"`
	Audience             string   `yaml:"audience"`
	Scope                []string `yaml:"scope"`
	OrganizationUsage    string   `yaml:"organization_usage"`
	AllowAnyOrganization bool     `yaml:"allow_any_organization"`
}

func (l *loader) resourceServers(rss []resourceServer) {
	each(rss, l.resourceServer)
	if len(l.m.APIs) == 0 {
		l.bad(l.tenantPath, "no resourceServers; fix: declare the API (identifier https://api.authmesh.dev)")
	}
}

func (l *loader) resourceServer(i int, rs resourceServer) {
	entry := fmt.Sprintf("resourceServers[%d] %q", i, rs.Identifier)
	switch {
	case rs.Identifier == "":
		l.bad(l.tenantPath, "resourceServers[%d] (%s): identifier is missing; fix: set identifier to the API audience", i, rs.Name)
		return
	case l.m.APIs[rs.Identifier] != nil:
		l.bad(l.tenantPath, "%s: duplicate identifier; fix: give each resource server its own identifier", entry)
		return
	case rs.Identifier == l.m.MgmtAud:
		l.bad(l.tenantPath, "%s: identifier is the Management API audience; fix: choose another identifier", entry)
		return
	}
	if rs.SigningAlg != "" && rs.SigningAlg != "RS256" {
		l.bad(l.tenantPath, "%s: signing_alg %q; fix: use RS256 (the only algorithm devtenant signs with)", entry, rs.SigningAlg)
	}
	if rs.TokenDialect != "" && !slices.Contains(tokenDialects, rs.TokenDialect) {
		l.bad(l.tenantPath, "%s: token_dialect %q; fix: use one of %s", entry, rs.TokenDialect, strings.Join(tokenDialects, ", "))
	}
	if rs.TokenLifetime < 0 || rs.TokenLifetime > 2592000 {
		l.bad(l.tenantPath, "%s: token_lifetime %d out of range; fix: use 1..2592000 seconds (default 86400)", entry, rs.TokenLifetime)
	}
	api := &API{Name: rs.Name, Identifier: rs.Identifier, TokenLifetime: rs.TokenLifetime,
		OfflineAccess: rs.AllowOfflineAccess, EnforcePolicies: rs.EnforcePolicies, Dialect: rs.TokenDialect}
	if api.TokenLifetime == 0 {
		api.TokenLifetime = 86400
	}
	if api.Dialect == "" {
		api.Dialect = "access_token"
	}
	if pop, err := parsePoP(rs.ProofOfPossession); err != nil {
		l.bad(l.tenantPath, "%s: %v", entry, err)
	} else {
		api.PoP = pop
	}
	for j, s := range rs.Scopes {
		switch {
		case s.Value == "" || strings.ContainsAny(s.Value, " \t\n"):
			l.bad(l.tenantPath, "%s scopes[%d]: value %q must be non-empty without spaces; fix: name it like read:things", entry, j, s.Value)
		case api.hasScope(s.Value):
			l.bad(l.tenantPath, "%s: duplicate scope %q; fix: list each scope once", entry, s.Value)
		default:
			api.Scopes = append(api.Scopes, s.Value)
		}
	}
	l.m.APIs[rs.Identifier] = api
}

func (l *loader) defaultAudience(tenant map[string]any) {
	if da, ok := tenant["default_audience"].(string); ok && da != "" {
		if l.m.APIs[da] == nil {
			l.bad(l.tenantPath, "tenant.default_audience %q is not a resource server; fix: use one of the resourceServers identifiers", da)
		}
		l.m.DefaultAud = da
	}
}

// named checks that entry i of section (roles, clients) has a name no
// earlier entry took, and returns how errors name the entry.
func (l *loader) named(section string, i int, name string, taken bool, fixMissing, fixDuplicate string) (entry string, ok bool) {
	if name == "" {
		l.bad(l.tenantPath, "%s[%d]: name is missing; fix: %s", section, i, fixMissing)
		return "", false
	}
	entry = fmt.Sprintf("%s[%d] %q", section, i, name)
	if taken {
		l.bad(l.tenantPath, "%s: duplicate %s name; fix: %s", entry, strings.TrimSuffix(section, "s"), fixDuplicate)
		return "", false
	}
	return entry, true
}

func (l *loader) role(i int, rd roleDef) {
	entry, ok := l.named("roles", i, rd.Name, l.m.Roles[rd.Name] != nil, "name the role", "merge the two roles or rename one")
	if !ok {
		return
	}
	role := &Role{ID: roleID(rd.Name), Name: rd.Name, Description: rd.Description, Permissions: map[string][]string{}}
	for _, p := range rd.Permissions {
		api := l.m.APIs[p.ResourceServerIdentifier]
		switch {
		case api == nil:
			l.bad(l.tenantPath, "%s: permission %q names unknown resource server %q; fix: use an identifier from resourceServers", entry, p.PermissionName, p.ResourceServerIdentifier)
		case !api.hasScope(p.PermissionName):
			l.bad(l.tenantPath, "%s: permission %q is not a scope of %q; fix: add it to that resource server's scopes or remove it from the role", entry, p.PermissionName, api.Identifier)
		case slices.Contains(role.Permissions[api.Identifier], p.PermissionName):
			l.bad(l.tenantPath, "%s: duplicate permission %q; fix: list it once", entry, p.PermissionName)
		default:
			role.Permissions[api.Identifier] = append(role.Permissions[api.Identifier], p.PermissionName)
		}
	}
	l.m.Roles[rd.Name] = role
	l.m.RoleOrder = append(l.m.RoleOrder, rd.Name)
}

func (l *loader) client(i int, cd clientDef) {
	entry, ok := l.named("clients", i, cd.Name, l.m.Clients[cd.Name] != nil, "name the client (its name is its client_id locally)", "rename one")
	if !ok {
		return
	}
	c := &Client{ID: cd.Name, AppType: cd.AppType, GrantTypes: cd.GrantTypes, Grants: map[string][]string{},
		IDTokenTTL: cd.JWTConfiguration.LifetimeInSeconds, RotateRefresh: cd.RefreshToken.RotationType == "rotating"}
	l.clientKind(entry, c, cd)
	l.clientOrgUsage(entry, c, cd.OrganizationUsage)
	if alg := cd.JWTConfiguration.Alg; alg != "" && alg != "RS256" {
		l.bad(l.tenantPath, "%s: jwt_configuration.alg %q; fix: use RS256", entry, alg)
	}
	if c.IDTokenTTL <= 0 {
		c.IDTokenTTL = 36000
	}
	for _, name := range cd.GrantTypes {
		g := lookupGrant(name)
		if g == nil {
			l.bad(l.tenantPath, "%s: unknown grant type %q; fix: use one of %s", entry, name, strings.Join(grantNames(false), ", "))
		}
		if g != nil && g.confidential && c.Public {
			l.bad(l.tenantPath, "%s: %s needs a confidential client; fix: make it non_interactive or drop the grant", entry, name)
		}
	}
	for _, cb := range cd.Callbacks {
		if u, err := url.Parse(cb); err != nil || u.Scheme == "" || u.Host == "" || strings.Contains(cb, "*") {
			l.bad(l.tenantPath, "%s: callback %q is not an absolute URL; fix: give the full URL (no wildcards)", entry, cb)
		}
	}
	l.clientOrigins(entry, c, append(slices.Clone(cd.WebOrigins), cd.AllowedOrigins...))
	c.Callbacks = cd.Callbacks
	l.m.Clients[c.ID] = c
}

// clientKind decides from app_type and token_endpoint_auth_method whether
// the client is public (cannot keep a secret).
func (l *loader) clientKind(entry string, c *Client, cd clientDef) {
	switch cd.AppType {
	case "spa", "native":
		c.Public = true
	case "regular_web", "non_interactive":
	default:
		l.bad(l.tenantPath, "%s: app_type %q; fix: use spa, native, regular_web or non_interactive", entry, cd.AppType)
	}
	switch cd.TokenEndpointAuthMethod {
	case "none":
		c.Public = true
	case "client_secret_post", "client_secret_basic":
		if c.Public {
			l.bad(l.tenantPath, "%s: a %s app cannot keep a secret; fix: set token_endpoint_auth_method: none", entry, cd.AppType)
		}
	case "":
	default:
		l.bad(l.tenantPath, "%s: token_endpoint_auth_method %q; fix: use none, client_secret_post or client_secret_basic", entry, cd.TokenEndpointAuthMethod)
	}
}

// clientOrigins keeps the client's web and allowed origins, and adds them to
// the tenant's CORS origins.
func (l *loader) clientOrigins(entry string, c *Client, origins []string) {
	for _, o := range origins {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			l.bad(l.tenantPath, "%s: origin %q is not scheme://host[:port]; fix: drop any path or trailing slash", entry, o)
			continue
		}
		if !slices.Contains(c.Origins, o) {
			c.Origins = append(c.Origins, o)
		}
		if !slices.Contains(l.m.CORSOrigins, o) {
			l.m.CORSOrigins = append(l.m.CORSOrigins, o)
		}
	}
}

func (l *loader) clientGrant(i int, g clientGrantDef) {
	entry := fmt.Sprintf("clientGrants[%d] (client_id %q, audience %q)", i, g.ClientID, g.Audience)
	c := l.m.Clients[g.ClientID]
	if c == nil {
		l.bad(l.tenantPath, "%s: unknown client; fix: use the name of an entry in clients", entry)
		return
	}
	var valid func(string) bool
	switch {
	case g.Audience == l.m.MgmtAud:
		valid = func(s string) bool { return slices.Contains(managementScopes, s) }
	case l.m.APIs[g.Audience] != nil:
		valid = l.m.APIs[g.Audience].hasScope
	default:
		l.bad(l.tenantPath, "%s: unknown audience; fix: use a resourceServers identifier or the Management API audience %q (keyword AUTH0_MANAGEMENT_AUDIENCE in %s)", entry, l.m.MgmtAud, l.keywordsPath)
		return
	}
	if _, dup := c.Grants[g.Audience]; dup {
		l.bad(l.tenantPath, "%s: duplicate grant for this client and audience; fix: merge their scopes", entry)
		return
	}
	if !c.allows(GrantClientCredentials) {
		l.bad(l.tenantPath, "%s: the client does not have the client_credentials grant type; fix: add it to its grant_types or drop the grant", entry)
	}
	scopes := []string{}
	for _, s := range g.Scope {
		if !valid(s) {
			l.bad(l.tenantPath, "%s: scope %q is not defined by that audience; fix: add it to the resource server's scopes or remove it", entry, s)
			continue
		}
		scopes = append(scopes, s)
	}
	c.Grants[g.Audience] = scopes
	l.clientGrantOrgs(entry, c, g)
}
