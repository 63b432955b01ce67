package tenant

import "errors"

// IssueUserTokenInOrg is IssueUserToken for a login to organization org
// (its id, or its name when the tenant allows names): the token carries
// org_id (and org_name). A user who is not a member gets an error.
func (s *Server) IssueUserTokenInOrg(email, org, audience, scope string) (string, error) {
	if org == "" {
		return "", errors.New("devtenant: no organization named")
	}
	return s.issueUserToken(email, org, audience, scope)
}
