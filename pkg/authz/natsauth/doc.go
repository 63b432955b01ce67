// Package natsauth carries Auth0 identities over NATS: request-reply through
// nats.go/micro, events through JetStream, a service's own M2M identity, and
// instant revocation of blocked users. See README.md for the guarantees.
//
// Client side: Request, Publish, PublishEvent and NewMsg put the caller's token
// (authz.TokenFromContext, or AsService's m2m.TokenSource), the W3C trace context
// and the request id on the message. Server side: NewService/AddEndpoint
// validate with the same authz.Validator and policies as HTTP and refuse
// endpoints without a policy. Events: Consumer verifies each event's token as
// of JetStream's stored time and dead-letters what it cannot accept.
package natsauth
