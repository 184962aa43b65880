// Package pause waits a while unless a context ends first: the one sleep of
// retries and backoffs that must stop with their worker.
package pause

import (
	"context"
	"time"
)

// For waits d; false when ctx ended first (at once when it already has, even
// for d ≤ 0).
func For(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
