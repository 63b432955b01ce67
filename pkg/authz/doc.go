// Package authz validates Auth0 access tokens and enforces permissions for
// Echo services and NATS endpoints that share one Auth0 tenant.
//
// It pins RS256, checks the issuer exactly and the audience any-of, requires
// exp, caches signing keys so that key rotation and identity-provider outages
// do not fail requests, caches verified tokens, and denies every route that has
// not declared a policy.
//
// The package logs nothing; it returns typed errors (see [Error]) and records
// decisions in Prometheus metrics on a registry the caller passes.
package authz
