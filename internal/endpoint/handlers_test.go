package endpoint

import (
	"sync"
	"testing"
	"time"
)

// handlers run every request at once, as many at a time as are given (a
// request never waits for another's goroutine), and a goroutine that
// finished one takes the next.
func TestHandlersRunAtOnceAndReuseGoroutines(t *testing.T) {
	h := newHandlers()
	const n = 8
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	for i := 0; i < n; i++ {
		h.run(func() { started.Done(); release.Wait() })
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("requests waited for one another")
	}
	release.Done()
	// Once they are back waiting, a request is taken by one of them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ran := make(chan struct{})
		select {
		case h.work <- func() { close(ran) }: // taken by a waiting goroutine
			<-ran
			return
		default:
			if time.Now().After(deadline) {
				t.Fatal("no handler goroutine waiting after its request")
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A nil handlers (a Runner made without NewRunner) runs each request on a
// goroutine of its own.
func TestNilHandlersRun(t *testing.T) {
	var h *handlers
	ran := make(chan struct{})
	h.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("not run")
	}
}
