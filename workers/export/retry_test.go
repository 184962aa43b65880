package export

import (
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// TestBackoff checks the runner's retry policy: exponential with jitter
// within [d/2, d], capped at max; a throttled call waits at least the cloud's
// hint, at most the cap; other classes ignore hints.
func TestBackoff(t *testing.T) {
	p := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for attempt, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		for range 50 {
			if d := p.delay(attempt); d < want/2 || d > want {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if d := p.delay(40); d < p.max/2 || d > p.max {
		t.Fatalf("delay(40) = %v, want ≤ %v", d, p.max)
	}
	hinted := &sink.Failure{Class: sink.RetryLater, After: 3 * time.Second}
	if d := p.wait(0, hinted, 15*time.Second); d != 3*time.Second {
		t.Fatalf("throttled with a 3s hint waits %v", d)
	}
	if d := p.wait(0, &sink.Failure{Class: sink.RetryLater, After: time.Hour}, 15*time.Second); d != 15*time.Second {
		t.Fatalf("an hour's hint waits %v, want the 15s cap", d)
	}
	if d := p.wait(0, &sink.Failure{Class: sink.Retry, After: 3 * time.Second}, 15*time.Second); d > 100*time.Millisecond {
		t.Fatalf("a retry ignores hints, waited %v", d)
	}
}
