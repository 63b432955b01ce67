// Package authz validates Auth0 access tokens and enforces permissions for
// Echo services and NATS endpoints that share one Auth0 tenant.
//
// It pins RS256, checks the issuer exactly and the audience any-of, requires
// exp, caches signing keys so that key rotation and identity-provider outages
// do not fail requests, caches verified tokens, and denies every route that has
// not declared a policy.
//
// A complete service:
//
//	keys, _ := authz.NewKeyProvider(authz.WithJWKSURL(jwksURL))
//	_ = keys.Start(ctx)
//	v, _ := authz.NewValidator(keys, authz.WithIssuers(issuer), authz.WithAudiences(audience))
//	e := echo.New()
//	reg := authz.NewRegistry()
//	e.Use(authz.Middleware(v, reg))
//	authz.GET(e, reg, "/v1/me", getMe, authz.RequireAll("read:profile").Users())
//	authz.GET(e, reg, "/healthz", health, authz.Public())
//	if err := reg.Check(e.Routes()); err != nil { ... }
//
// Handlers read the caller with ClaimsFromEcho or ClaimsFromContext.
//
// The package logs nothing; it returns typed errors (see [Error]) and records
// decisions in Prometheus metrics on a registry the caller passes.
package authz
