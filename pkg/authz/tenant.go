package authz

import (
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// LoadTenantPermissions reads an Auth0 Deploy CLI tenant.yaml and returns the
// permissions (scopes) of the resource server whose identifier is audience.
func LoadTenantPermissions(path, audience string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authz: tenant file: %w", err)
	}
	var doc struct {
		ResourceServers []struct {
			Identifier string `yaml:"identifier"`
			Scopes     []struct {
				Value string `yaml:"value"`
			} `yaml:"scopes"`
		} `yaml:"resourceServers"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("authz: tenant file %s: %w", path, err)
	}
	if len(doc.ResourceServers) == 0 {
		return nil, fmt.Errorf("authz: tenant file %s: no resourceServers", path)
	}
	for _, rs := range doc.ResourceServers {
		if rs.Identifier != audience {
			continue
		}
		perms := make([]string, 0, len(rs.Scopes))
		for _, s := range rs.Scopes {
			if s.Value == "" {
				return nil, errors.New("authz: tenant file: a scope has no value")
			}
			perms = append(perms, s.Value)
		}
		return perms, nil
	}
	return nil, fmt.Errorf("authz: tenant file %s: no resource server with identifier %q", path, audience)
}
