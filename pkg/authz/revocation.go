package authz

import "time"

// RevocationChecker reports when a subject's tokens were revoked (a blocked
// user). Tokens whose iat is not after the revocation time plus the
// validator's leeway are rejected with reason "revoked": the revocation time
// is taken on the revoking service's clock and iat on the tenant's, so a
// tenant clock running up to the leeway ahead cannot carry a token issued
// just before the block past it. Implementations must be safe for concurrent use and fast:
// they are consulted on every request, also for cached tokens.
// natsauth provides one backed by a JetStream KV bucket.
//
// A checker that must load its list first also implements RevocationLoader:
// until its Ready returns nil the validator fails closed, refusing every
// token as unavailable (503 + Retry-After, an event retried) rather than
// accepting tokens it cannot check — a replica that has just started, or
// whose NATS is not there yet, would otherwise let a blocked user in.
type RevocationChecker interface {
	RevokedAt(subject string) (time.Time, bool)
}

// RevocationLifter is implemented by a RevocationChecker that also knows
// when a subject's revocation was lifted (an unblock): tokens issued at or
// after that instant, yet within the leeway after the revocation, are
// accepted again — otherwise a user unblocked right after a block would wait
// out the leeway. Tokens issued at or before the revocation itself stay
// rejected whatever the lift says.
type RevocationLifter interface {
	LiftedAt(subject string) (time.Time, bool)
}

// RevocationLoader is implemented by a RevocationChecker with a loading
// phase: Ready returns nil once its list is complete.
type RevocationLoader interface {
	Ready() error
}

// checkRevoked refuses a token of a revoked subject issued before the
// revocation. stored is the zero time for a request being served now; for an
// event it is the time the log stored the message: a message stored before the
// revocation was published while its token was good (the publisher cannot
// choose the stored time), so it is still accepted — otherwise a block would
// strand every event already queued for the user (a paid invoice whose order
// never learns it).
func checkRevoked(o *validatorOptions, c *Claims, stored time.Time) error {
	if o.revocations == nil {
		return nil
	}
	if l := o.revLoader; l != nil {
		if err := l.Ready(); err != nil {
			return &Error{Code: CodeKeysUnavailable, Reason: "revocations_unavailable",
				Description: "the revocation list is not loaded yet", Err: err}
		}
	}
	at, ok := o.revocations.RevokedAt(c.Subject)
	if !ok {
		return nil
	}
	if !stored.IsZero() && stored.Before(at) {
		return nil
	}
	// iat has second precision: a token issued in the same second as the
	// revocation may predate it, so it is refused too.
	if c.IssuedAt.IsZero() || c.IssuedAt.Unix() <= at.Truncate(time.Second).Unix() {
		return invalid("revoked", "the token has been revoked", nil)
	}
	// The tenant's clock may run up to the leeway ahead of the revoking
	// service's: a token whose iat is within the leeway after the revocation
	// may have been issued before it.
	if c.IssuedAt.Unix() > at.Add(o.leeway).Truncate(time.Second).Unix() {
		return nil
	}
	if l, ok := o.revocations.(RevocationLifter); ok {
		if lifted, ok := l.LiftedAt(c.Subject); ok && lifted.After(at) && c.IssuedAt.Unix() >= lifted.Unix() {
			return nil
		}
	}
	return invalid("revoked", "the token has been revoked", nil)
}
