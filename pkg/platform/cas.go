package platform

import (
	"errors"
	"fmt"
)

// CASAttempts bounds RetryCAS: how many times a read-modify-write is tried
// against concurrent writers before giving up.
const CASAttempts = 10

// ErrContended is what RetryCAS returns, joined with the last lost race,
// when every attempt lost.
var ErrContended = errors.New("too many concurrent writers")

// RetryCAS runs try, one read followed by one compare-and-set write, again
// while lost reports its error as a lost race (the revision moved
// meanwhile), at most CASAttempts times. Any other outcome, success
// included, is returned as it is. When every attempt lost, the error wraps
// ErrContended and the last attempt's error, so a caller's conflict
// sentinel still matches.
//
//	o, err := platform.RetryCAS(func(err error) bool { return errors.Is(err, domain.ErrConflict) },
//		func() (domain.Order, error) {
//			o, rev, err := store.Get(ctx, id)
//			...
//			_, err = store.Update(ctx, o, rev)
//			return o, err
//		})
func RetryCAS[T any](lost func(error) bool, try func() (T, error)) (T, error) {
	var err error
	for range CASAttempts {
		var v T
		v, err = try()
		if err == nil || !lost(err) {
			return v, err
		}
	}
	var zero T
	return zero, fmt.Errorf("%w (%d attempts): %w", ErrContended, CASAttempts, err)
}
