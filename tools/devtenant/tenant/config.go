package tenant

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

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

// API is a resource server of the tenant.
type API struct {
	Name            string
	Identifier      string
	TokenLifetime   int
	OfflineAccess   bool
	EnforcePolicies bool
	// Dialect is the token_dialect: access_token or rfc9068_profile, and
	// their _authz forms whose tokens carry permissions (profile.go).
	Dialect string
	Scopes  []string
	// PoP is proof_of_possession (DPoP, dpop.go); nil: tokens are Bearer.
	PoP *PoP
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
	// OrgUsage (logins) and OrgGrants (client credentials, by audience):
	// whether an organization may be named (config_orgs.go).
	OrgUsage  string
	OrgGrants map[string]orgGrant
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
	Issuer     string
	MgmtAud    string
	DefaultAud string
	// ResourceParam: the tenant's resource_parameter_profile is
	// compatibility, so the RFC 8707 resource parameter names the API when
	// audience does not (profile.go).
	ResourceParam bool
	APIs          map[string]*API
	Roles         map[string]*Role // by name
	RoleOrder     []string
	Clients       map[string]*Client
	Users         []*User
	CORSOrigins   []string
	// Orgs are the organizations by id; OrgNameInTokens is the tenant's
	// allow_organization_name_in_authentication_api (config_orgs.go).
	Orgs            map[string]*Organization
	OrgNameInTokens bool
}

// LoadModel reads and validates the tenant file and the dev directory for the
// given issuer. Every problem found is reported, each naming the file, the
// entry and the fix.
//
// It reads the Deploy CLI file section by section (resource servers, the
// default audience, roles, clients, client grants), then the dev files
// (client secrets, users); each section is checked by its own function,
// against the sections before it.
func LoadModel(issuer, tenantPath, devDir string) (*Model, error) {
	l := &loader{
		m: &Model{
			Issuer:  issuer,
			MgmtAud: issuer + "api/v2/",
			APIs:    map[string]*API{},
			Roles:   map[string]*Role{},
			Clients: map[string]*Client{},
		},
		tenantPath:   tenantPath,
		keywordsPath: filepath.Join(devDir, keywordsFile),
		secretsPath:  filepath.Join(devDir, secretsFile),
		usersPath:    filepath.Join(devDir, usersFile),
	}
	tf, err := l.readTenantFile()
	if err != nil {
		return nil, err
	}
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	l.resourceServers(tf.ResourceServers)
	l.defaultAudience(tf.Tenant)
	l.resourceParameterProfile(tf.Tenant)
	each(tf.Roles, l.role)
	each(tf.Clients, l.client)
	each(tf.ClientGrants, l.clientGrant)
	l.organizations(tf.Organizations, tf.Tenant)
	l.clientSecrets()
	l.users()
	l.orgMembers(devDir)
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return l.m, nil
}

// loader builds a Model and collects every problem it finds on the way.
type loader struct {
	m                                                *Model
	tenantPath, keywordsPath, secretsPath, usersPath string
	errs                                             []error
}

// bad records a problem in file.
func (l *loader) bad(file, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...)))
}

// each checks the entries of a section in order.
func each[T any](entries []T, check func(i int, entry T)) {
	for i, e := range entries {
		check(i, e)
	}
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
func roleID(name string) string { return stableID("rol_", "authmesh-role:", name) }

// stableID is prefix and 16 alphanumerics derived from the name in its
// namespace: the same name, the same id, in every run.
func stableID(prefix, namespace, name string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	sum := sha256.Sum256([]byte(namespace + name))
	b := make([]byte, 16)
	for i := range b {
		b[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return prefix + string(b)
}
