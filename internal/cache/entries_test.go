package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// A hit takes no lock the store's writers hold: it is answered while an
// invalidation (here: its lock, held by the test) is under way.
func TestHitDoesNotWaitForWriters(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "x"}
	a := s.Wrap("a", Policy{TTL: time.Hour}, p)
	if _, err := a.Resolve(context.Background(), provider.Request{Secret: "s1"}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	done := make(chan bool)
	go func() {
		_, ok := s.Peek("a", provider.Request{Secret: "s1"})
		done <- ok
	}()
	select {
	case ok := <-done:
		s.mu.Unlock()
		if !ok {
			t.Fatal("no hit")
		}
	case <-time.After(10 * time.Second):
		s.mu.Unlock()
		t.Fatal("a hit waited for the store's lock")
	}
}

// The bound holds under concurrent stores, hits and invalidations, and the
// entries evicted are the least recently used.
func TestBoundUnderConcurrency(t *testing.T) {
	s, clk := newStore(t, 64)
	p := &fakeProvider{version: "v1", value: "x"}
	a := s.Wrap("a", Policy{TTL: time.Hour}, p)
	ctx := context.Background()
	if _, err := a.Resolve(ctx, provider.Request{Secret: "hot"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				_, _ = a.Resolve(ctx, provider.Request{Secret: fmt.Sprintf("k%d-%d", g, i)})
				if i%10 == 0 {
					s.Invalidate("a", fmt.Sprintf("k%d-%d", g, i-5))
				}
			}
		}(g)
	}
	wg.Wait()
	if n := s.Len(); n > 64 {
		t.Fatalf("len %d over the bound", n)
	}
	// Sequentially: "hot", used every 50 stores, survives the evictions;
	// the oldest entries do not.
	clk.add(2 * time.Millisecond)
	if _, err := a.Resolve(ctx, provider.Request{Secret: "hot"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		clk.add(2 * time.Millisecond)
		if i%50 == 0 {
			if _, ok := s.Peek("a", provider.Request{Secret: "hot"}); !ok {
				t.Fatalf("hot entry evicted after %d stores", i)
			}
		}
		_, _ = a.Resolve(ctx, provider.Request{Secret: fmt.Sprint("seq", i)})
	}
	if n := s.Len(); n > 64 || n < 60 {
		t.Fatalf("len %d, want 60..64", n)
	}
	if _, ok := s.Peek("a", provider.Request{Secret: "seq0"}); ok {
		t.Fatal("the least recently used entry was kept")
	}
	if _, ok := s.Peek("a", provider.Request{Secret: "seq199"}); !ok {
		t.Fatal("the last entry stored was evicted")
	}
}

// Invalidating connections and secrets never fetched (every connection of a
// worker's registry, as changes are watched) keeps nothing in memory.
func TestInvalidateUnfetchedKeepsNothing(t *testing.T) {
	s, _ := newStore(t, 10)
	for i := 0; i < 100; i++ {
		s.Invalidate(fmt.Sprint("c", i), "")
		s.Invalidate(fmt.Sprint("c", i), "s")
		s.Refresh(fmt.Sprint("c", i), "s")
	}
	n := 0
	s.gens.Range(func(_, _ any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d generations kept for connections never fetched", n)
	}
}
