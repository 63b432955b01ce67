package tenant

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

var userIDPattern = regexp.MustCompile(`^auth0\|[0-9a-f]{24}$`)

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

func (l *loader) clientSecrets() {
	var sf secretsFileDoc
	if err := readYAML(l.secretsPath, &sf); err != nil {
		l.bad(l.secretsPath, "%v; fix: write client_secrets: {<client name>: <secret>}", err)
	}
	for name, secret := range sf.ClientSecrets {
		c := l.m.Clients[name]
		switch {
		case c == nil:
			l.bad(l.secretsPath, "client_secrets.%s: no such client in %s; fix: remove it or add the client", name, l.tenantPath)
		case c.Public:
			l.bad(l.secretsPath, "client_secrets.%s: the client is public (%s); fix: remove the secret", name, c.AppType)
		case len(secret) < 8:
			l.bad(l.secretsPath, "client_secrets.%s: secret too short; fix: use at least 8 characters", name)
		default:
			c.Secret = secret
		}
	}
	for _, name := range slices.Sorted(maps.Keys(l.m.Clients)) {
		if c := l.m.Clients[name]; !c.Public && c.Secret == "" {
			l.bad(l.secretsPath, "client %q is confidential but has no secret; fix: add %s: %s-dev-secret under client_secrets", name, name, name)
		}
	}
}

func (l *loader) users() {
	var uf usersFileDoc
	if err := readYAML(l.usersPath, &uf); err != nil {
		l.bad(l.usersPath, "%v; fix: write users: [{user_id, email, password, roles}]", err)
	}
	seenID, seenEmail := map[string]bool{}, map[string]bool{}
	for i, du := range uf.Users {
		email := strings.ToLower(strings.TrimSpace(du.Email))
		ok := l.userValid(i, du, email, seenID, seenEmail)
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
		l.m.Users = append(l.m.Users, u)
	}
}

// userValid reports every problem of users[i]; email is its normalised address.
func (l *loader) userValid(i int, du devUser, email string, seenID, seenEmail map[string]bool) bool {
	entry := fmt.Sprintf("users[%d] %q", i, du.Email)
	ok := true
	bad := func(format string, args ...any) {
		l.bad(l.usersPath, format, args...)
		ok = false
	}
	if !userIDPattern.MatchString(du.UserID) {
		bad("%s: user_id %q; fix: use auth0| followed by 24 lowercase hex digits", entry, du.UserID)
	} else if seenID[du.UserID] {
		bad("%s: duplicate user_id %q; fix: give each user its own id", entry, du.UserID)
	}
	if email == "" || !strings.Contains(email, "@") {
		bad("users[%d]: email %q is not an address; fix: give an email", i, du.Email)
	} else if seenEmail[email] {
		bad("%s: duplicate email; fix: give each user its own email", entry)
	}
	if du.Password == "" {
		bad("%s: password is missing; fix: set password: dev-password", entry)
	}
	if du.Connection != "" && du.Connection != Connection {
		bad("%s: connection %q; fix: use %s (the only connection of devtenant)", entry, du.Connection, Connection)
	}
	for _, r := range du.Roles {
		if l.m.Roles[r] == nil {
			bad("%s: unknown role %q; fix: use one of %s or add the role to %s", entry, r, strings.Join(l.m.RoleOrder, ", "), l.tenantPath)
		}
	}
	return ok
}
