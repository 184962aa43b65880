package export

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/pause"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// backoff is the runner's retry policy: exponential from min to max, with
// jitter; a throttled call waits at least the cloud's hint.
type backoff struct{ min, max time.Duration }

// delay is the wait before retry attempt+1 (jittered: between half and all of
// min·2^attempt, capped at max).
func (p backoff) delay(attempt int) time.Duration {
	d := p.min << min(attempt, 20)
	if d > p.max || d <= 0 {
		d = p.max
	}
	return d/2 + rand.N(d/2+1)
}

// wait is the wait before retrying the failed call f: the backoff, or the
// cloud's retry-after hint of a throttled call when longer, at most hintCap.
func (p backoff) wait(attempt int, f *sink.Failure, hintCap time.Duration) time.Duration {
	d := p.delay(attempt)
	if f != nil && f.Class == sink.RetryLater && f.After > d {
		d = min(f.After, max(hintCap, d))
	}
	return d
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool { return pause.For(ctx, d) }

// retryReason is the label of a retry: throttled, unavailable or the error's code.
func retryReason(err error) string {
	return string(events.CodeOf(err))
}
