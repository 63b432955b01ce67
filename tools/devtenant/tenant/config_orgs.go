package tenant

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Auth0 Organizations: the tenant file's organizations section (Deploy CLI
// format), the organization settings of clients and client grants, and the
// dev memberships (deploy/dev/organization-members.yaml: the Deploy CLI does
// not manage members; a real tenant gets them through the Management API
// or invitations).

const orgMembersFile = "organization-members.yaml"

// Organization usage of a client (login) or client grant (client credentials), as Auth0 spells it.
const (
	OrgUsageDeny    = "deny" // the default: no organization may be named
	OrgUsageAllow   = "allow"
	OrgUsageRequire = "require"
)

// Organization is an Auth0 Organization of the tenant.
type Organization struct {
	ID          string // org_ + 16 alphanumerics, derived from the name
	Name        string
	DisplayName string
	// Members are the user ids that may log in to it.
	Members map[string]bool
	// Clients are the clients whose client grants it is associated with
	// (client credentials may name it).
	Clients []string
}

// orgGrant is the organization setting of one client grant.
type orgGrant struct {
	usage    string
	anyOrg   bool // allow_any_organization: no association needed
	declared bool
}

type orgDef struct {
	Name         string `yaml:"name"`
	DisplayName  string `yaml:"display_name"`
	ClientGrants []struct {
		ClientID string `yaml:"client_id"`
	} `yaml:"client_grants"`
}

type orgMembersDoc struct {
	Members map[string][]string `yaml:"members"` // organization name → user emails
}

// Auth0's rule for organization names: lowercase alphanumerics, - and _, at most 50.
var orgNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,49}$`)

// orgID derives a stable Auth0-looking organization id from the name.
func orgID(name string) string { return stableID("org_", "authmesh-org:", name) }

func validOrgUsage(u string) bool {
	return u == "" || u == OrgUsageDeny || u == OrgUsageAllow || u == OrgUsageRequire
}

// clientOrgUsage checks a client's organization_usage (logins).
func (l *loader) clientOrgUsage(entry string, c *Client, usage string) {
	if !validOrgUsage(usage) {
		l.bad(l.tenantPath, "%s: organization_usage %q; fix: use deny, allow or require", entry, usage)
	}
	if usage == "" {
		usage = OrgUsageDeny
	}
	c.OrgUsage = usage
}

// clientGrantOrgs checks a client grant's organization settings.
func (l *loader) clientGrantOrgs(entry string, c *Client, g clientGrantDef) {
	if !validOrgUsage(g.OrganizationUsage) {
		l.bad(l.tenantPath, "%s: organization_usage %q; fix: use deny, allow or require", entry, g.OrganizationUsage)
	}
	if g.Audience == l.m.MgmtAud && g.OrganizationUsage != "" && g.OrganizationUsage != OrgUsageDeny {
		l.bad(l.tenantPath, "%s: the Management API cannot be used with organizations; fix: drop organization_usage", entry)
	}
	usage := g.OrganizationUsage
	if usage == "" {
		usage = OrgUsageDeny
	}
	if c.OrgGrants == nil {
		c.OrgGrants = map[string]orgGrant{}
	}
	c.OrgGrants[g.Audience] = orgGrant{usage: usage, anyOrg: g.AllowAnyOrganization, declared: true}
}

// organizations reads the organizations section and the tenant setting
// that puts org_name in tokens (and lets the organization parameter name
// an organization by name).
func (l *loader) organizations(defs []orgDef, tenant map[string]any) {
	l.m.Orgs = map[string]*Organization{}
	if v, ok := tenant["allow_organization_name_in_authentication_api"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			l.bad(l.tenantPath, "tenant.allow_organization_name_in_authentication_api %v; fix: use true or false", v)
		}
		l.m.OrgNameInTokens = b
	}
	byName := map[string]bool{}
	for i, d := range defs {
		entry, ok := l.named("organizations", i, d.Name, byName[d.Name], "name the organization", "rename one")
		if !ok {
			continue
		}
		byName[d.Name] = true
		if !orgNamePattern.MatchString(d.Name) {
			l.bad(l.tenantPath, "%s: name must be lowercase letters, digits, - or _ (at most 50); fix: rename it", entry)
			continue
		}
		o := &Organization{ID: orgID(d.Name), Name: d.Name, DisplayName: d.DisplayName, Members: map[string]bool{}}
		for _, cg := range d.ClientGrants {
			c := l.m.Clients[cg.ClientID]
			switch {
			case c == nil:
				l.bad(l.tenantPath, "%s: client_grants names unknown client %q; fix: use the name of an entry in clients", entry, cg.ClientID)
			case !slices.ContainsFunc(slices.Collect(maps.Values(c.OrgGrants)), func(g orgGrant) bool { return g.usage != OrgUsageDeny }):
				l.bad(l.tenantPath, "%s: client %q has no client grant with organization_usage allow or require; fix: set it on the client grant", entry, cg.ClientID)
			case !slices.Contains(o.Clients, cg.ClientID):
				o.Clients = append(o.Clients, cg.ClientID)
			}
		}
		l.m.Orgs[o.ID] = o
	}
}

// orgMembers reads the dev memberships; a missing file means no members.
func (l *loader) orgMembers(devDir string) {
	path := filepath.Join(devDir, orgMembersFile)
	var doc orgMembersDoc
	if err := readYAML(path, &doc); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			l.bad(path, "%v; fix: write members: {<organization name>: [<user email>]}", err)
		}
		return
	}
	for _, name := range slices.Sorted(maps.Keys(doc.Members)) {
		o := l.m.orgByName(name)
		if o == nil {
			l.bad(path, "members.%s: no such organization in %s; fix: add it to organizations or remove it", name, l.tenantPath)
			continue
		}
		for _, email := range doc.Members[name] {
			u := l.m.userByEmail(strings.ToLower(strings.TrimSpace(email)))
			if u == nil {
				l.bad(path, "members.%s: no user %q in %s; fix: use a user's email", name, email, l.usersPath)
				continue
			}
			o.Members[u.ID] = true
		}
	}
}

func (m *Model) orgByName(name string) *Organization {
	for _, o := range m.Orgs {
		if o.Name == name {
			return o
		}
	}
	return nil
}

func (m *Model) userByEmail(email string) *User {
	for _, u := range m.Users {
		if u.Email == email {
			return u
		}
	}
	return nil
}

// Org returns the organization the organization parameter names: its id,
// or its name when the tenant allows names (as Auth0 does).
func (m *Model) Org(param string) (*Organization, bool) {
	if o := m.Orgs[param]; o != nil {
		return o, true
	}
	if m.OrgNameInTokens {
		if o := m.orgByName(param); o != nil {
			return o, true
		}
	}
	return nil, false
}

func (o *Organization) String() string { return fmt.Sprintf("%s (%s)", o.Name, o.ID) }
