package platform

import (
	"context"
	"time"
)

// Every calls fn every d until ctx ends (the first call d after Every starts;
// call fn once yourself to run it at once). A background task of a service
// is `a.Go(name, func(ctx context.Context) error { platform.Every(ctx, d, work); return nil })`.
func Every(ctx context.Context, d time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil {
				return // both were ready: the end wins
			}
			fn(ctx)
		}
	}
}
