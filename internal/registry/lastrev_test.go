package registry

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lastRevision gives each caller a read started after its call began (what
// keptFor's soundness rests on), and callers share reads: 64 concurrent
// callers of reads that take a while cost fewer reads than callers.
func TestLastRevisionReadsAfterTheCall(t *testing.T) {
	b := &bucket{}
	var started atomic.Uint64
	read := func(context.Context) (uint64, error) {
		n := started.Add(1)          // the read's number, in the order reads start
		time.Sleep(time.Millisecond) // a round trip, for callers to arrive meanwhile
		return n, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				before := started.Load()
				n, err := b.lastRevision(ctx, time.Now().Add(5*time.Second), read)
				if err != nil {
					t.Error(err)
					return
				}
				if n <= before {
					t.Errorf("got read %d, started before the call (%d reads had)", n, before)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := started.Load(); n >= 64*20 {
		t.Errorf("%d reads for %d calls: none shared", n, 64*20)
	}
	b.lastMu.Lock()
	defer b.lastMu.Unlock()
	if b.lastInFlight != 0 || b.lastNext != nil {
		t.Errorf("left in flight: %d, next %v", b.lastInFlight, b.lastNext)
	}
}
