package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultSetUpTimeout bounds one try of a set-up step (Options.SetUpTimeout).
const DefaultSetUpTimeout = 10 * time.Second

// setUpStep is one step added with SetUp.
type setUpStep struct {
	name string
	fn   func(ctx context.Context) error
	done chan struct{} // closed once fn succeeded

	mu      sync.Mutex
	lastErr error
}

// ready is the step's readiness check.
func (s *setUpStep) ready(context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("not set up yet: %w", s.lastErr)
	}
	return errors.New("not set up yet")
}

// SetUp adds a set-up step: creating what the service owns on NATS (streams,
// buckets, durables) and binding what it reads, which cannot happen before
// NATS answers. From Run on, fn is tried, each try bounded by
// Options.SetUpTimeout, and retried with a growing pause (0.5 s, 1 s, ...
// up to 5 s) until it succeeds or the app shuts down; each failure is logged.
//
// A step gates what comes after it: /readyz reports the step (by name) as
// failing until it succeeded, and a step or a task (Go) added after it
// starts only once it succeeded. Steps run one after the other, in the
// order they were added. Hand what a step produces to the routes through a
// Lazy, which answers ErrNotReady until then.
func (a *App) SetUp(name string, fn func(ctx context.Context) error) {
	s := &setUpStep{name: name, fn: fn, done: make(chan struct{})}
	a.mu.Lock()
	a.steps = append(a.steps, s)
	a.mu.Unlock()
	a.AddReadyCheck(name, s.ready)
}

// runSteps runs every step in order until each succeeded or ctx ends.
func (a *App) runSteps(ctx context.Context, steps []*setUpStep) {
	for _, s := range steps {
		if !a.runStep(ctx, s) {
			return
		}
	}
}

// runStep tries s until it succeeds (true) or ctx ends (false).
func (a *App) runStep(ctx context.Context, s *setUpStep) bool {
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, a.opts.SetUpTimeout)
		err := s.fn(tctx)
		cancel()
		if err == nil {
			close(s.done)
			a.Logger.Info("set up", slog.String("step", s.name), slog.Int("attempt", attempt))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		a.Logger.Warn("not set up yet; retrying", slog.String("step", s.name), slog.Int("attempt", attempt), slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(setUpPause(attempt)):
		}
	}
}

// setUpPause is the pause after the attempt-th failed try.
func setUpPause(attempt int) time.Duration {
	return min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)
}

// afterSteps waits until every step in steps succeeded; false when ctx
// ended first.
func afterSteps(ctx context.Context, steps []*setUpStep) bool {
	for _, s := range steps {
		select {
		case <-s.done:
		case <-ctx.Done():
			return false
		}
	}
	return true
}
