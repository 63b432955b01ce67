package tenant

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// In-process issuance, for devstack and component tests.

// ErrUnknown is returned by the Issue methods for an unknown user, client or audience.
var ErrUnknown = errors.New("devtenant: unknown user, client or audience")

// IssueUserToken returns an access token for the dev user with email, as the
// password grant of the first-party CLI client would. An empty audience means
// the tenant's API when it has exactly one; an empty scope asks for
// "openid profile email" and every permission of the API (RBAC then keeps
// only the user's). A blocked user gets an error.
func (s *Server) IssueUserToken(email, audience, scope string) (string, error) {
	return s.issueUserToken(email, "", audience, scope)
}

func (s *Server) issueUserToken(email, orgParam, audience, scope string) (string, error) {
	u, ok := s.store.userByEmail(strings.ToLower(strings.TrimSpace(email)))
	if !ok {
		return "", fmt.Errorf("%w: user %q", ErrUnknown, email)
	}
	if u.Blocked {
		return "", fmt.Errorf("devtenant: user %s is blocked", email)
	}
	var org *Organization
	if orgParam != "" {
		o, oerr := s.lookupOrg(orgParam)
		if oerr == nil {
			oerr = member(o, u.ID)
		}
		if oerr != nil {
			return "", errors.New("devtenant: " + oerr.desc)
		}
		org = o
	}
	if audience == "" && len(s.model.APIs) == 1 {
		for id := range s.model.APIs {
			audience = id
		}
	}
	api, oerr := s.userAudience(audience)
	if oerr != nil {
		return "", fmt.Errorf("%w: %s", ErrUnknown, oerr.desc)
	}
	if scope == "" {
		scope = "openid profile email"
		if api != nil {
			scope += " " + strings.Join(api.Scopes, " ")
		}
	}
	c := s.cliClient()
	if c == nil {
		return "", fmt.Errorf("%w: no client with the password grant", ErrUnknown)
	}
	resp, oerr := s.userTokens(c, u, api, scope, GrantPassword, "", "", "", org)
	if oerr != nil {
		return "", errors.New("devtenant: " + oerr.desc)
	}
	return resp.AccessToken, nil
}

// cliClient is the client that in-process user tokens are issued to (azp).
func (s *Server) cliClient() *Client {
	if c := s.model.Clients["authmesh-cli"]; c != nil && c.allows(GrantPassword) {
		return c
	}
	for _, id := range slices.Sorted(maps.Keys(s.model.Clients)) {
		if c := s.model.Clients[id]; c.allows(GrantPassword) {
			return c
		}
	}
	return nil
}

// IssueClientToken returns a client-credentials token for clientID with all
// the scopes its grant for audience allows. An empty audience means the
// client's only grant.
func (s *Server) IssueClientToken(clientID, audience string) (string, error) {
	c := s.model.Clients[clientID]
	if c == nil {
		return "", fmt.Errorf("%w: client %q", ErrUnknown, clientID)
	}
	if audience == "" {
		if len(c.Grants) != 1 {
			return "", fmt.Errorf("devtenant: client %s has %d client grants; name the audience", clientID, len(c.Grants))
		}
		for a := range c.Grants {
			audience = a
		}
	}
	resp, oerr := s.clientToken(c, audience, "", nil)
	if oerr != nil {
		return "", errors.New("devtenant: " + oerr.desc)
	}
	return resp.AccessToken, nil
}
