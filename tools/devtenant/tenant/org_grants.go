package tenant

import (
	"fmt"
	"net/http"
	"slices"
)

// The organization parameter of logins (/authorize, and the password grant
// — a devtenant convenience for scripts: Auth0 offers Organizations on
// interactive logins and client credentials only) and of client-credentials
// requests. A request that names none gets a token without org_id, exactly
// as before Organizations existed.

// orgClaims are the org_id and org_name of a token issued for org (nil: none).
func (s *Server) orgClaims(org *Organization) (id, name string) {
	if org == nil {
		return "", ""
	}
	if s.model.OrgNameInTokens {
		return org.ID, org.Name
	}
	return org.ID, ""
}

// lookupOrg resolves the organization parameter.
func (s *Server) lookupOrg(param string) (*Organization, *oauthErr) {
	o, ok := s.model.Org(param)
	if !ok {
		return nil, &oauthErr{http.StatusBadRequest, "invalid_request", "parameter organization is invalid: " + truncate(param, 60) + " does not exist"}
	}
	return o, nil
}

// loginClientOrg checks the organization parameter of a login against the
// client's organization_usage, before anyone logs in.
func (s *Server) loginClientOrg(c *Client, param string) (*Organization, *oauthErr) {
	switch {
	case param == "" && c.OrgUsage == OrgUsageRequire:
		return nil, badRequest("parameter organization is required for this client")
	case param == "":
		return nil, nil
	case c.OrgUsage != OrgUsageAllow && c.OrgUsage != OrgUsageRequire:
		return nil, &oauthErr{http.StatusBadRequest, "invalid_request", "parameter organization is not allowed for this client (organization_usage is deny)"}
	}
	return s.lookupOrg(param)
}

// member refuses a user who is not a member of org.
func member(org *Organization, userID string) *oauthErr {
	if org == nil || org.Members[userID] {
		return nil
	}
	return &oauthErr{http.StatusForbidden, "access_denied", fmt.Sprintf("user is not a member of the organization %q", org.Name)}
}

// clientOrg checks the organization parameter of a client-credentials
// request against the client grant of aud: organization_usage, and the
// organization's association with the grant (or allow_any_organization).
func (s *Server) clientOrg(c *Client, aud, param string) (*Organization, *oauthErr) {
	g := c.OrgGrants[aud]
	if param == "" {
		if g.usage == OrgUsageRequire {
			return nil, &oauthErr{http.StatusForbidden, "access_denied", "An organization is required for this client grant: send the organization parameter"}
		}
		return nil, nil
	}
	if !g.declared || g.usage == OrgUsageDeny || g.usage == "" {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", fmt.Sprintf(
			"Client %q is not allowed to use organizations with audience %q (organization_usage is deny)", c.ID, truncate(aud, 200))}
	}
	o, err := s.lookupOrg(param)
	if err != nil {
		return nil, err
	}
	if !g.anyOrg && !slices.Contains(o.Clients, c.ID) {
		return nil, &oauthErr{http.StatusForbidden, "access_denied", fmt.Sprintf(
			"Client %q is not authorized to access %q on behalf of organization %q", c.ID, truncate(aud, 200), o.Name)}
	}
	return o, nil
}

// keptOrg is the organization a code or refresh token was issued for (""
// none), still there and still counting userID as a member.
func (s *Server) keptOrg(id, userID string, gone *oauthErr) (*Organization, *oauthErr) {
	if id == "" {
		return nil, nil
	}
	o := s.model.Orgs[id]
	if o == nil || !o.Members[userID] {
		return nil, gone
	}
	return o, nil
}
