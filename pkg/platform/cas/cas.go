// Package cas retries compare-and-set writes that lost a race: one loop,
// one limit, for every read-modify-write on a JetStream bucket. It imports
// nothing, so use cases (app packages) and adapters alike can use it.
package cas

import (
	"errors"
	"fmt"
)

// Attempts bounds Retry: how many times a read-modify-write is tried
// against concurrent writers before giving up.
const Attempts = 10

// ErrContended is what Retry returns, joined with the last lost race,
// when every attempt lost.
var ErrContended = errors.New("too many concurrent writers")

// Retry runs try, one read followed by one compare-and-set write, again
// while lost reports its error as a lost race (the revision moved
// meanwhile), at most Attempts times. Any other outcome, success
// included, is returned as it is. When every attempt lost, the error wraps
// ErrContended and the last attempt's error, so a caller's conflict
// sentinel still matches.
//
//	o, err := cas.Retry(func(err error) bool { return errors.Is(err, domain.ErrConflict) },
//		func() (domain.Order, error) {
//			o, rev, err := store.Get(ctx, id)
//			...
//			_, err = store.Update(ctx, o, rev)
//			return o, err
//		})
func Retry[T any](lost func(error) bool, try func() (T, error)) (T, error) {
	var err error
	for range Attempts {
		var v T
		v, err = try()
		if err == nil || !lost(err) {
			return v, err
		}
	}
	var zero T
	return zero, fmt.Errorf("%w (%d attempts): %w", ErrContended, Attempts, err)
}
