package authztest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails tb if it does not within
// the time given; what says what was awaited.
func Eventually(tb testing.TB, within time.Duration, cond func() bool, what string) {
	tb.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", within, what)
		}
	}
}

// Receive returns the next value from ch, and fails tb if none comes within
// the time given; what says what was awaited.
func Receive[T any](tb testing.TB, ch <-chan T, within time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		var zero T
		tb.Fatalf("not within %v: %s", within, what)
		return zero
	}
}
