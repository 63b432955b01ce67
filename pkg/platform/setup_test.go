package platform

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/fault"
)

// TestSetUpRetriesAndGates: a failing step is retried, /readyz names it until
// it succeeds, and a task added after it starts only then (one added before
// does not wait).
func TestSetUpRetriesAndGates(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.billingConfig(t, nil)
	a, _ := newServedApp(t, context.Background(), cfg, Options{SetUpTimeout: 50 * time.Millisecond})
	store := NewLazy[string]("widget store")
	var tries atomic.Int32
	early := make(chan struct{})
	a.Go("early", func(ctx context.Context) error { close(early); <-ctx.Done(); return nil })
	a.SetUp("widgets", func(ctx context.Context) error {
		if tries.Add(1) < 3 {
			<-ctx.Done() // the per-try timeout ends it
			return ctx.Err()
		}
		store.Set("ready")
		return nil
	})
	late := make(chan string, 1)
	a.Go("late", func(ctx context.Context) error {
		v, err := store.Get(ctx)
		if err != nil {
			v = err.Error()
		}
		late <- v
		<-ctx.Done()
		return nil
	})
	runInBackground(t, a)

	<-early
	if _, err := store.Get(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Get before set-up = %v, want ErrNotReady", err)
	}
	rec := httptest.NewRecorder()
	a.Echo.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz during set-up = %d %s", rec.Code, rec.Body)
	}
	if v := authztest.Receive(t, late, 5*time.Second, "the task after the step starting"); v != "ready" {
		t.Fatalf("the task after the step saw %q", v)
	}
	if n := tries.Load(); n != 3 {
		t.Errorf("%d tries, want 3", n)
	}
	if v, err := store.Get(context.Background()); err != nil || v != "ready" {
		t.Errorf("Get after set-up = %q, %v", v, err)
	}
}

func TestLazyHonoursContext(t *testing.T) {
	t.Parallel()
	l := NewLazy[int]("n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Get(context.Background()); !errors.Is(err, ErrNotReady) || !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("Get before Set = %v, want ErrNotReady and fault.ErrUnavailable", err)
	}
	<-ctx.Done()
	if _, err := l.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with an ended context = %v", err)
	}
	l.Set(1)
	l.Set(2)
	if v, err := l.Get(context.Background()); v != 1 || err != nil {
		t.Fatalf("Get = %d, %v; want the first value", v, err)
	}
	if e, _ := resolve(ErrNotReady, []ErrorMapping{notReadyMapping}); e.Status != http.StatusServiceUnavailable {
		t.Fatalf("ErrNotReady answers %d", e.Status)
	}
}

// runInBackground runs a until the test ends, failing it if Run returns an
// error.
func runInBackground(t *testing.T, a *App) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
