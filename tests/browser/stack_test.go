package browser

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
)

// onStack starts the whole local stack for a browser test and returns the
// test's context (ten minutes: devstack builds the three services first, and
// on a cold build cache, as in CI, that dominates), Chromium's path and the
// screenshot directory.
func onStack(t *testing.T) (ctx context.Context, chromium, shots string) {
	t.Helper()
	return onStackWithTenant(t, "")
}

// onStackWithTenant is onStack with devtenant serving tenantFile (empty:
// deploy/tenant.yaml).
func onStackWithTenant(t *testing.T, tenantFile string) (ctx context.Context, chromium, shots string) {
	t.Helper()
	chromium = chromiumPath(t)
	portsFree(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	startStack(t, ctx, root, tenantFile)
	return ctx, chromium, outputDir(t)
}

// startStack runs the whole local stack the way `make run` does (devstack.Run:
// embedded NATS, devtenant, the three services, web/ on :8404) with a fresh
// data directory, and stops it when the test ends. The stack's own logs go to
// testdata/screenshots/stack.log next to the screenshots.
func startStack(t *testing.T, ctx context.Context, root, tenantFile string) {
	t.Helper()
	logPath := filepath.Join(outputDir(t), "stack.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(ctx)
	ready := make(chan devstack.Ready, 1)
	done := make(chan struct{}) // closed when Run has returned runErr
	var runErr error
	go func() {
		defer close(done)
		runErr = devstack.Run(ctx, devstack.Config{
			Root:       root,
			TenantFile: tenantFile,
			DataDir:    t.TempDir(),
			Out:        logFile,
			NoBanner:   true,
			OnReady:    func(r devstack.Ready) { ready <- r },
		})
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
			if runErr != nil && !t.Failed() {
				t.Errorf("stack stopped with: %v (log: %s)", runErr, logPath)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30 s (log: %s)", logPath)
		}
		_ = logFile.Close()
	})

	select {
	case r := <-ready:
		if !r.WebServed {
			t.Fatalf("the stack does not serve web/ on %s", spaURL)
		}
	case <-done:
		t.Fatalf("the stack did not start: %v (log: %s)", runErr, logPath)
	case <-ctx.Done():
		t.Fatalf("the stack was not ready in time: %v (log: %s)", ctx.Err(), logPath)
	}
}

// outputDir is where screenshots and the stack log go (gitignored).
func outputDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("testdata", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
