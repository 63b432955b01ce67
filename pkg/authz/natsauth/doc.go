// Package natsauth carries identities over NATS without handing any service a
// replayable token: request-reply through nats.go/micro and events through
// JetStream carry a transaction token (Txn-Token) that the Transaction Token
// Service issued for one hop, never an access token. See README.md for the
// guarantees.
//
// Client side: Request, PublishEvent (SealEvent, SealedEvent.Publish) and
// NewMsg put a transaction token on the message — exchanged (TxnClient) for
// the caller's access token or for AsService's own M2M token, or the one a
// NATS handler received, forwarded; an event's is bound to the event — with
// the W3C trace context and the request id. Server side:
// NewService/AddEndpoint verify it with an authz.TxnValidator and the same
// policies as HTTP, refuse an Authorization header and endpoints without a
// policy. Events: Consumer verifies each event's token as of JetStream's
// stored time and dead-letters what it cannot accept.
package natsauth
