// Package cas retries compare-and-set writes that lost a race: one loop,
// one limit, and one test of a lost race (Conflict), for every
// read-modify-write on a JetStream bucket. Use cases (app packages) call
// Retry and Lost; adapters tell a lost race from a failure with Conflict. It
// sits in the authz module because natsauth's revocation list is one of
// those buckets, and pkg/authz imports nothing of the platform's.
package cas

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Attempts bounds Retry: how many times a read-modify-write is tried
// against concurrent writers before giving up.
const Attempts = 10

// ErrContended is what Retry returns, joined with the last lost race,
// when every attempt lost.
var ErrContended = errors.New("too many concurrent writers")

// lost marks an error as a lost race (see Lost).
type lost struct{ err error }

func (l *lost) Error() string { return l.err.Error() }
func (l *lost) Unwrap() error { return l.err }

// Lost marks err, a compare-and-set that found the revision moved, as a
// lost race, which Retry tries again. Lost(nil) is nil.
func Lost(err error) error {
	if err == nil {
		return nil
	}
	return &lost{err}
}

// Retry runs try, one read followed by one compare-and-set write, again
// while it returns an error marked with Lost, at most Attempts times. Any
// other outcome, success included, is returned as it is. When every attempt
// lost, the error wraps ErrContended and the last attempt's error, so the
// caller's conflict sentinel still matches.
//
//	o, err := cas.Retry(func() (domain.Order, error) {
//		o, rev, err := store.Get(ctx, id)
//		if err != nil {
//			return o, err
//		}
//		...
//		_, err = store.Update(ctx, o, rev)
//		if errors.Is(err, domain.ErrConflict) {
//			return o, cas.Lost(err)
//		}
//		return o, err
//	})
func Retry[T any](try func() (T, error)) (T, error) {
	var err error
	for range Attempts {
		var v T
		v, err = try()
		var l *lost
		if !errors.As(err, &l) {
			return v, err
		}
	}
	var zero T
	return zero, fmt.Errorf("%w (%d attempts): %w", ErrContended, Attempts, err)
}

// Conflict reports whether err is a compare-and-set on a JetStream KV bucket
// that lost a race: Create on a key that exists, or Update (Delete, Purge)
// at a revision that is no longer the key's last. Any other error is a
// failure to report, not to retry.
func Conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
