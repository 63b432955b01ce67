package platform

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
)

func TestEveryCallsUntilTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, 5*time.Millisecond, func(context.Context) {
			if calls.Add(1) == 3 {
				cancel()
			}
		})
	}()
	authztest.Receive(t, done, 5*time.Second, "Every returning after its context ended")
	if n := calls.Load(); n != 3 {
		t.Fatalf("fn ran %d times, want 3 (none after the context ended)", n)
	}
}
