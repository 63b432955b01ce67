package ttstest

import "testing"

// UserTokenInOrg is UserToken for a login to organization org (name or
// id, deploy/tenant.yaml's organizations): the token carries org_id and
// org_name. The user must be a member (deploy/dev/organization-members.yaml).
func (s *Stack) UserTokenInOrg(tb testing.TB, email, org, scope string) string {
	tb.Helper()
	tok, err := s.Tenant.IssueUserTokenInOrg(email, org, Audience, scope)
	if err != nil {
		tb.Fatalf("ttstest: token for %s in %s: %v", email, org, err)
	}
	return tok
}
