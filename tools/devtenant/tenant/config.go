package tenant

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Connection is the only database connection devtenant has, as in a fresh Auth0 tenant.
const Connection = "Username-Password-Authentication"

// The files under the dev directory.
const (
	usersFile    = "users.yaml"
	secretsFile  = "client-secrets.yaml"
	keywordsFile = "keywords.yaml"
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

var (
	userIDPattern  = regexp.MustCompile(`^auth0\|[0-9a-f]{24}$`)
	keywordPattern = regexp.MustCompile(`(##|@@)([A-Za-z0-9_]+)(##|@@)`)
)

// Deploy CLI YAML, only the fields devtenant acts on; the rest is ignored so a
// file written for a real tenant loads unchanged.
type tenantFile struct {
	Tenant          map[string]any   `yaml:"tenant"`
	ResourceServers []resourceServer `yaml:"resourceServers"`
	Roles           []roleDef        `yaml:"roles"`
	Clients         []clientDef      `yaml:"clients"`
	ClientGrants    []clientGrantDef `yaml:"clientGrants"`
}

type resourceServer struct {
	Name               string `yaml:"name"`
	Identifier         string `yaml:"identifier"`
	SigningAlg         string `yaml:"signing_alg"`
	TokenLifetime      int    `yaml:"token_lifetime"`
	AllowOfflineAccess bool   `yaml:"allow_offline_access"`
	EnforcePolicies    bool   `yaml:"enforce_policies"`
	TokenDialect       string `yaml:"token_dialect"`
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
}

type clientGrantDef struct {
	ClientID string   `yaml:"client_id"`
	Audience string   `yaml:"audience"`
	Scope    []string `yaml:"scope"`
}

type usersFileDoc struct {
	Users []devUser `yaml:"users"`
}

type devUser struct {
	UserID        string   `yaml:"user_id"`
	Email         string   `yaml:"email"`
	EmailVerified *bool    `yaml:"email_verified"`
	Name          string   `yaml:"name"`
	Nickname      string   `yaml:"nickname"`
	GivenName     string   `yaml:"given_name"`
	FamilyName    string   `yaml:"family_name"`
	Password      string   `yaml:"password"`
	Connection    string   `yaml:"connection"`
	Roles         []string `yaml:"roles"`
	Blocked       bool     `yaml:"blocked"`
}

type secretsFileDoc struct {
	ClientSecrets map[string]string `yaml:"client_secrets"`
}

// API is a resource server of the tenant.
type API struct {
	Name            string
	Identifier      string
	TokenLifetime   int
	OfflineAccess   bool
	EnforcePolicies bool
	// Dialect is access_token or access_token_authz (tokens carry permissions).
	Dialect string
	Scopes  []string
}

func (a *API) hasScope(s string) bool { return slices.Contains(a.Scopes, s) }

// Role is a tenant role with its permissions per API identifier.
type Role struct {
	ID          string
	Name        string
	Description string
	Permissions map[string][]string
}

// Client is an application of the tenant; ID is its name, as in contract §2.
type Client struct {
	ID            string
	AppType       string
	Public        bool
	Secret        string
	GrantTypes    []string
	Callbacks     []string
	Origins       []string
	IDTokenTTL    int
	RotateRefresh bool
	// Grants maps an audience to the scopes granted for client credentials.
	Grants map[string][]string
}

func (c *Client) allows(grant string) bool { return slices.Contains(c.GrantTypes, grant) }

// User is a dev user as loaded from the dev directory (before persisted changes).
type User struct {
	ID            string
	Email         string
	EmailVerified bool
	Name          string
	Nickname      string
	GivenName     string
	FamilyName    string
	Password      string
	Roles         []string
	Blocked       bool
}

// Model is the validated tenant: tenant file, dev users, secrets and keywords together.
type Model struct {
	Issuer      string
	MgmtAud     string
	DefaultAud  string
	APIs        map[string]*API
	Roles       map[string]*Role // by name
	RoleOrder   []string
	Clients     map[string]*Client
	Users       []*User
	CORSOrigins []string
}

// LoadModel reads and validates the tenant file and the dev directory for the
// given issuer. Every problem found is reported, each naming the file, the
// entry and the fix.
func LoadModel(issuer, tenantPath, devDir string) (*Model, error) {
	m := &Model{
		Issuer:  issuer,
		MgmtAud: issuer + "api/v2/",
		APIs:    map[string]*API{},
		Roles:   map[string]*Role{},
		Clients: map[string]*Client{},
	}
	var errs []error
	bad := func(file, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...)))
	}

	keywordsPath := filepath.Join(devDir, keywordsFile)
	keywords := map[string]any{"AUTH0_MANAGEMENT_AUDIENCE": m.MgmtAud}
	if raw, err := os.ReadFile(keywordsPath); err == nil {
		var kw map[string]any
		if err := yaml.Unmarshal(raw, &kw); err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %v; fix: write KEY: value lines", keywordsPath, err)
		}
		for k, v := range kw {
			switch v.(type) {
			case string, []any:
			default:
				bad(keywordsPath, "keyword %s: value must be a string or a list; fix: quote it", k)
			}
			keywords[k] = v
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %v", keywordsPath, err)
	}

	raw, err := os.ReadFile(tenantPath)
	if err != nil {
		return nil, fmt.Errorf("tenant file: %v; fix: set DEVTENANT_TENANT_FILE to deploy/tenant.yaml", err)
	}
	// Keywords are replaced in scalar values only (comments may mention them),
	// with the Deploy CLI's meaning: ##KEY## inside a string, @@KEY@@ as a
	// whole value that may be a list.
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid Deploy CLI YAML: %v", tenantPath, err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		for _, c := range n.Content {
			walk(c)
		}
		if n.Kind != yaml.ScalarNode || !keywordPattern.MatchString(n.Value) {
			return
		}
		if parts := keywordPattern.FindStringSubmatch(n.Value); parts[0] == n.Value && parts[1] == "@@" && parts[3] == "@@" {
			v, ok := keywords[parts[2]]
			if !ok {
				bad(tenantPath, "line %d: keyword %s has no value; fix: add %s: <value> to %s", n.Line, n.Value, parts[2], keywordsPath)
				return
			}
			var repl yaml.Node
			if err := repl.Encode(v); err != nil {
				bad(keywordsPath, "keyword %s: %v", parts[2], err)
				return
			}
			*n = repl
			return
		}
		n.Value = keywordPattern.ReplaceAllStringFunc(n.Value, func(s string) string {
			parts := keywordPattern.FindStringSubmatch(s)
			if parts[1] != "##" || parts[3] != "##" {
				bad(tenantPath, "line %d: %s mixes ## and @@; fix: write ##%s## or @@%s@@", n.Line, s, parts[2], parts[2])
				return s
			}
			v, ok := keywords[parts[2]]
			if !ok {
				bad(tenantPath, "line %d: keyword %s has no value; fix: add %s: <value> to %s", n.Line, s, parts[2], keywordsPath)
				return s
			}
			sv, ok := v.(string)
			if !ok {
				bad(tenantPath, "line %d: keyword %s is a list; fix: use @@%s@@ as the whole value", n.Line, s, parts[2])
				return s
			}
			return sv
		})
	}
	walk(&doc)
	var tf tenantFile
	if err := doc.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: not valid Deploy CLI YAML: %v", tenantPath, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Resource servers.
	for i, rs := range tf.ResourceServers {
		entry := fmt.Sprintf("resourceServers[%d] %q", i, rs.Identifier)
		switch {
		case rs.Identifier == "":
			bad(tenantPath, "resourceServers[%d] (%s): identifier is missing; fix: set identifier to the API audience", i, rs.Name)
			continue
		case m.APIs[rs.Identifier] != nil:
			bad(tenantPath, "%s: duplicate identifier; fix: give each resource server its own identifier", entry)
			continue
		case rs.Identifier == m.MgmtAud:
			bad(tenantPath, "%s: identifier is the Management API audience; fix: choose another identifier", entry)
			continue
		}
		if rs.SigningAlg != "" && rs.SigningAlg != "RS256" {
			bad(tenantPath, "%s: signing_alg %q; fix: use RS256 (the only algorithm devtenant signs with)", entry, rs.SigningAlg)
		}
		if rs.TokenDialect != "" && rs.TokenDialect != "access_token" && rs.TokenDialect != "access_token_authz" {
			bad(tenantPath, "%s: token_dialect %q; fix: use access_token or access_token_authz", entry, rs.TokenDialect)
		}
		if rs.TokenLifetime < 0 || rs.TokenLifetime > 2592000 {
			bad(tenantPath, "%s: token_lifetime %d out of range; fix: use 1..2592000 seconds (default 86400)", entry, rs.TokenLifetime)
		}
		api := &API{Name: rs.Name, Identifier: rs.Identifier, TokenLifetime: rs.TokenLifetime,
			OfflineAccess: rs.AllowOfflineAccess, EnforcePolicies: rs.EnforcePolicies, Dialect: rs.TokenDialect}
		if api.TokenLifetime == 0 {
			api.TokenLifetime = 86400
		}
		if api.Dialect == "" {
			api.Dialect = "access_token"
		}
		for j, s := range rs.Scopes {
			switch {
			case s.Value == "" || strings.ContainsAny(s.Value, " \t\n"):
				bad(tenantPath, "%s scopes[%d]: value %q must be non-empty without spaces; fix: name it like read:things", entry, j, s.Value)
			case api.hasScope(s.Value):
				bad(tenantPath, "%s: duplicate scope %q; fix: list each scope once", entry, s.Value)
			default:
				api.Scopes = append(api.Scopes, s.Value)
			}
		}
		m.APIs[rs.Identifier] = api
	}
	if len(m.APIs) == 0 {
		bad(tenantPath, "no resourceServers; fix: declare the API (identifier https://api.authmesh.dev)")
	}
	if da, ok := tf.Tenant["default_audience"].(string); ok && da != "" {
		if m.APIs[da] == nil {
			bad(tenantPath, "tenant.default_audience %q is not a resource server; fix: use one of the resourceServers identifiers", da)
		}
		m.DefaultAud = da
	}

	// Roles.
	for i, rd := range tf.Roles {
		entry := fmt.Sprintf("roles[%d] %q", i, rd.Name)
		if rd.Name == "" {
			bad(tenantPath, "roles[%d]: name is missing; fix: name the role", i)
			continue
		}
		if m.Roles[rd.Name] != nil {
			bad(tenantPath, "%s: duplicate role name; fix: merge the two roles or rename one", entry)
			continue
		}
		role := &Role{ID: roleID(rd.Name), Name: rd.Name, Description: rd.Description, Permissions: map[string][]string{}}
		for _, p := range rd.Permissions {
			api := m.APIs[p.ResourceServerIdentifier]
			switch {
			case api == nil:
				bad(tenantPath, "%s: permission %q names unknown resource server %q; fix: use an identifier from resourceServers", entry, p.PermissionName, p.ResourceServerIdentifier)
			case !api.hasScope(p.PermissionName):
				bad(tenantPath, "%s: permission %q is not a scope of %q; fix: add it to that resource server's scopes or remove it from the role", entry, p.PermissionName, api.Identifier)
			case slices.Contains(role.Permissions[api.Identifier], p.PermissionName):
				bad(tenantPath, "%s: duplicate permission %q; fix: list it once", entry, p.PermissionName)
			default:
				role.Permissions[api.Identifier] = append(role.Permissions[api.Identifier], p.PermissionName)
			}
		}
		m.Roles[rd.Name] = role
		m.RoleOrder = append(m.RoleOrder, rd.Name)
	}

	// Clients.
	for i, cd := range tf.Clients {
		entry := fmt.Sprintf("clients[%d] %q", i, cd.Name)
		if cd.Name == "" {
			bad(tenantPath, "clients[%d]: name is missing; fix: name the client (its name is its client_id locally)", i)
			continue
		}
		if m.Clients[cd.Name] != nil {
			bad(tenantPath, "%s: duplicate client name; fix: rename one", entry)
			continue
		}
		c := &Client{ID: cd.Name, AppType: cd.AppType, GrantTypes: cd.GrantTypes, Grants: map[string][]string{},
			IDTokenTTL: cd.JWTConfiguration.LifetimeInSeconds, RotateRefresh: cd.RefreshToken.RotationType == "rotating"}
		switch cd.AppType {
		case "spa", "native":
			c.Public = true
		case "regular_web", "non_interactive":
		default:
			bad(tenantPath, "%s: app_type %q; fix: use spa, native, regular_web or non_interactive", entry, cd.AppType)
		}
		switch cd.TokenEndpointAuthMethod {
		case "none":
			c.Public = true
		case "client_secret_post", "client_secret_basic":
			if c.Public {
				bad(tenantPath, "%s: a %s app cannot keep a secret; fix: set token_endpoint_auth_method: none", entry, cd.AppType)
			}
		case "":
		default:
			bad(tenantPath, "%s: token_endpoint_auth_method %q; fix: use none, client_secret_post or client_secret_basic", entry, cd.TokenEndpointAuthMethod)
		}
		if alg := cd.JWTConfiguration.Alg; alg != "" && alg != "RS256" {
			bad(tenantPath, "%s: jwt_configuration.alg %q; fix: use RS256", entry, alg)
		}
		if c.IDTokenTTL <= 0 {
			c.IDTokenTTL = 36000
		}
		for _, name := range cd.GrantTypes {
			g := lookupGrant(name)
			if g == nil {
				bad(tenantPath, "%s: unknown grant type %q; fix: use one of %s", entry, name, strings.Join(grantNames(false), ", "))
			}
			if g != nil && g.confidential && c.Public {
				bad(tenantPath, "%s: %s needs a confidential client; fix: make it non_interactive or drop the grant", entry, name)
			}
		}
		for _, cb := range cd.Callbacks {
			if u, err := url.Parse(cb); err != nil || u.Scheme == "" || u.Host == "" || strings.Contains(cb, "*") {
				bad(tenantPath, "%s: callback %q is not an absolute URL; fix: give the full URL (no wildcards)", entry, cb)
			}
		}
		for _, o := range append(slices.Clone(cd.WebOrigins), cd.AllowedOrigins...) {
			if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
				bad(tenantPath, "%s: origin %q is not scheme://host[:port]; fix: drop any path or trailing slash", entry, o)
				continue
			}
			if !slices.Contains(c.Origins, o) {
				c.Origins = append(c.Origins, o)
			}
			if !slices.Contains(m.CORSOrigins, o) {
				m.CORSOrigins = append(m.CORSOrigins, o)
			}
		}
		c.Callbacks = cd.Callbacks
		m.Clients[c.ID] = c
	}

	// Client grants.
	for i, g := range tf.ClientGrants {
		entry := fmt.Sprintf("clientGrants[%d] (client_id %q, audience %q)", i, g.ClientID, g.Audience)
		c := m.Clients[g.ClientID]
		if c == nil {
			bad(tenantPath, "%s: unknown client; fix: use the name of an entry in clients", entry)
			continue
		}
		var valid func(string) bool
		switch {
		case g.Audience == m.MgmtAud:
			valid = func(s string) bool { return slices.Contains(managementScopes, s) }
		case m.APIs[g.Audience] != nil:
			valid = m.APIs[g.Audience].hasScope
		default:
			bad(tenantPath, "%s: unknown audience; fix: use a resourceServers identifier or the Management API audience %q (keyword AUTH0_MANAGEMENT_AUDIENCE in %s)", entry, m.MgmtAud, keywordsPath)
			continue
		}
		if _, dup := c.Grants[g.Audience]; dup {
			bad(tenantPath, "%s: duplicate grant for this client and audience; fix: merge their scopes", entry)
			continue
		}
		if !c.allows(GrantClientCredentials) {
			bad(tenantPath, "%s: the client does not have the client_credentials grant type; fix: add it to its grant_types or drop the grant", entry)
		}
		scopes := []string{}
		for _, s := range g.Scope {
			if !valid(s) {
				bad(tenantPath, "%s: scope %q is not defined by that audience; fix: add it to the resource server's scopes or remove it", entry, s)
				continue
			}
			scopes = append(scopes, s)
		}
		c.Grants[g.Audience] = scopes
	}

	// Client secrets.
	secretsPath := filepath.Join(devDir, secretsFile)
	var sf secretsFileDoc
	if err := readYAML(secretsPath, &sf); err != nil {
		bad(secretsPath, "%v; fix: write client_secrets: {<client name>: <secret>}", err)
	}
	for name, secret := range sf.ClientSecrets {
		c := m.Clients[name]
		switch {
		case c == nil:
			bad(secretsPath, "client_secrets.%s: no such client in %s; fix: remove it or add the client", name, tenantPath)
		case c.Public:
			bad(secretsPath, "client_secrets.%s: the client is public (%s); fix: remove the secret", name, c.AppType)
		case len(secret) < 8:
			bad(secretsPath, "client_secrets.%s: secret too short; fix: use at least 8 characters", name)
		default:
			c.Secret = secret
		}
	}
	for _, name := range sortedKeys(m.Clients) {
		if c := m.Clients[name]; !c.Public && c.Secret == "" {
			bad(secretsPath, "client %q is confidential but has no secret; fix: add %s: %s-dev-secret under client_secrets", name, name, name)
		}
	}

	// Users.
	usersPath := filepath.Join(devDir, usersFile)
	var uf usersFileDoc
	if err := readYAML(usersPath, &uf); err != nil {
		bad(usersPath, "%v; fix: write users: [{user_id, email, password, roles}]", err)
	}
	seenID, seenEmail := map[string]bool{}, map[string]bool{}
	for i, du := range uf.Users {
		entry := fmt.Sprintf("users[%d] %q", i, du.Email)
		ok := true
		if !userIDPattern.MatchString(du.UserID) {
			bad(usersPath, "%s: user_id %q; fix: use auth0| followed by 24 lowercase hex digits", entry, du.UserID)
			ok = false
		} else if seenID[du.UserID] {
			bad(usersPath, "%s: duplicate user_id %q; fix: give each user its own id", entry, du.UserID)
			ok = false
		}
		email := strings.ToLower(strings.TrimSpace(du.Email))
		if email == "" || !strings.Contains(email, "@") {
			bad(usersPath, "users[%d]: email %q is not an address; fix: give an email", i, du.Email)
			ok = false
		} else if seenEmail[email] {
			bad(usersPath, "%s: duplicate email; fix: give each user its own email", entry)
			ok = false
		}
		if du.Password == "" {
			bad(usersPath, "%s: password is missing; fix: set password: dev-password", entry)
			ok = false
		}
		if du.Connection != "" && du.Connection != Connection {
			bad(usersPath, "%s: connection %q; fix: use %s (the only connection of devtenant)", entry, du.Connection, Connection)
			ok = false
		}
		for _, r := range du.Roles {
			if m.Roles[r] == nil {
				bad(usersPath, "%s: unknown role %q; fix: use one of %s or add the role to %s", entry, r, strings.Join(m.RoleOrder, ", "), tenantPath)
				ok = false
			}
		}
		seenID[du.UserID], seenEmail[email] = true, true
		if !ok {
			continue
		}
		u := &User{ID: du.UserID, Email: email, EmailVerified: du.EmailVerified == nil || *du.EmailVerified,
			Name: du.Name, Nickname: du.Nickname, GivenName: du.GivenName, FamilyName: du.FamilyName,
			Password: du.Password, Roles: slices.Clone(du.Roles), Blocked: du.Blocked}
		if u.Name == "" {
			u.Name = email
		}
		if u.Nickname == "" {
			u.Nickname = strings.SplitN(email, "@", 2)[0]
		}
		m.Users = append(m.Users, u)
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// readYAML decodes path strictly: dev files are ours, so a typo is an error.
func readYAML(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not valid: %v", err)
	}
	return nil
}

// roleID derives a stable Auth0-looking role id (rol_ + 16 alphanumerics) from
// the role name, so ids survive restarts without being stored.
func roleID(name string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	sum := sha256.Sum256([]byte("authmesh-role:" + name))
	b := make([]byte, 16)
	for i := range b {
		b[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return "rol_" + string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
