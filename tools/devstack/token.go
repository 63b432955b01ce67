package devstack

import (
	"context"
	"fmt"
	"net/url"

	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

// cliClient is the public client passwordToken uses.
const cliClient = "authmesh-cli"

// passwordToken asks the tenant for a user's access token with the password
// grant and the public CLI client, exactly as a developer would with curl.
func passwordToken(ctx context.Context, tokenURL, username, password string) (string, error) {
	form := url.Values{
		"grant_type": {"password"},
		"username":   {username},
		"password":   {password},
		"client_id":  {cliClient},
		"audience":   {Audience},
		"scope":      {"openid profile email"},
	}
	tok, err := tenant.RequestToken(ctx, tokenURL, form)
	if err != nil {
		return "", fmt.Errorf("devstack: token for %s: %w", username, err)
	}
	return tok, nil
}

// ClientToken asks the running local tenant for service's client-credentials
// token (its dev client "<service>-service"): what the service itself
// presents to NATS, for tools that act as that service (the bench).
func ClientToken(ctx context.Context, service string) (string, error) {
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {service + "-service"},
		"client_secret": {service + "-service-dev-secret"},
		"audience":      {Audience},
	}
	tok, err := tenant.RequestToken(ctx, "http://localhost"+TenantAddr+"/oauth/token", form)
	if err != nil {
		return "", fmt.Errorf("devstack: client token for %s: %w", service, err)
	}
	return tok, nil
}
