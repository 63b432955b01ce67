// Package m2m gives a service its own identity: an Auth0 M2M access token
// from the OAuth 2.0 client-credentials grant, cached, refreshed before it
// expires, single-flight and retried with backoff (ClientCredentials).
//
// It sits beside authz rather than in it: authz verifies tokens others
// present and needs no OAuth client; a service that only verifies does not
// link one. natsauth.AsService takes a TokenSource for work no user started,
// and users' Management API client uses one over HTTP.
//
//	ts, err := m2m.NewClientCredentials(m2m.Config{
//		TokenURL: "https://tenant.eu.auth0.com/oauth/token",
//		ClientID: "orders-service", ClientSecret: secret,
//		Audience: "https://api.authmesh.dev",
//	})
//	tok, err := ts.Token(ctx)
package m2m
