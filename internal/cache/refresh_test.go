package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRefreshReadsAheadOnce: a refresh re-reads a cached secret in the
// background with one call (no version check), leaves other secrets and
// uncached ones alone, and the next request is a hit on the new value.
func TestRefreshReadsAheadOnce(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "old"}
	r := s.Wrap("c", Policy{TTL: 12 * time.Hour}, checkingProvider{p})
	for _, name := range []string{"db", "other"} {
		if _, err := r.Resolve(context.Background(), provider.Request{Secret: name}); err != nil {
			t.Fatal(err)
		}
	}
	p.set("v2", "new", nil)
	if n := s.Refresh("c", "db"); n != 1 {
		t.Fatalf("Refresh re-reads %d values, want 1", n)
	}
	if n := s.Refresh("c", "never-cached"); n != 0 {
		t.Fatalf("Refresh of an uncached secret re-reads %d", n)
	}
	waitUntil(t, "the re-read", func() bool {
		sec, ok := s.Peek("c", provider.Request{Secret: "db"})
		return ok && string(sec.Data) == "new@db"
	})
	if c, k := p.calls.Load(), p.checks.Load(); c != 3 || k != 0 {
		t.Fatalf("calls %d checks %d, want 3 and 0", c, k)
	}
	if sec, ok := s.Peek("c", provider.Request{Secret: "other"}); !ok || string(sec.Data) != "old@other" {
		t.Fatalf("sibling: %q %v", sec.Data, ok)
	}
}

// TestRefreshKeepsMaxStaleFallback: when the re-read fails because the
// provider is down, the old value is no hit but still the max_stale fallback.
func TestRefreshKeepsMaxStaleFallback(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "old"}
	r := s.Wrap("c", Policy{TTL: 12 * time.Hour, MaxStale: time.Hour}, p)
	if _, err := r.Resolve(context.Background(), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	p.set("v2", "new", fmt.Errorf("down: %w", events.ErrUnavailable))
	s.Refresh("c", "db")
	waitUntil(t, "the failed re-read", func() bool { return p.calls.Load() == 2 })
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); ok {
		t.Fatal("an outdated value is a hit")
	}
	sec, err := r.Resolve(context.Background(), provider.Request{Secret: "db"})
	if err != nil || !sec.Stale || string(sec.Data) != "old@db" {
		t.Fatalf("fallback: %+v %v", sec, err)
	}
}

// TestLimitTTL: a cap shortens the TTL of cached and new values; lifting it
// restores the policy's TTL for values stored afterwards.
func TestLimitTTL(t *testing.T) {
	s, clk := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "old"}
	r := s.Wrap("c", Policy{TTL: 12 * time.Hour}, p)
	if _, err := r.Resolve(context.Background(), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	s.LimitTTL("c", time.Minute)
	clk.add(2 * time.Minute)
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); ok {
		t.Fatal("cached value kept its 12h TTL under a 1m cap")
	}
	if _, err := r.Resolve(context.Background(), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); ok {
		t.Fatal("value stored under the cap kept 12h")
	}
	s.LimitTTL("c", 0)
	if _, err := r.Resolve(context.Background(), provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); !ok {
		t.Fatal("cap not lifted")
	}
}

// TestRefreshThenMissMakesOneCall: a request that misses right after Refresh
// returns (before the background re-read would have been scheduled) joins
// the re-read: no version check of the outdated value (known to have
// changed), one provider call per rotation, the new value served.
func TestRefreshThenMissMakesOneCall(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v0", value: "val0"}
	r := s.Wrap("c", Policy{TTL: 12 * time.Hour}, checkingProvider{p})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	const rotations = 50
	for i := 1; i <= rotations; i++ {
		p.set(fmt.Sprintf("v%d", i), fmt.Sprintf("val%d", i), nil)
		if n := s.Refresh("c", "db"); n != 1 {
			t.Fatalf("rotation %d: Refresh re-reads %d values, want 1", i, n)
		}
		sec, err := r.Resolve(ctx, provider.Request{Secret: "db"})
		if err != nil || string(sec.Data) != fmt.Sprintf("val%d@db", i) {
			t.Fatalf("rotation %d: %q %v", i, sec.Data, err)
		}
	}
	s.Close() // waits for the background re-reads
	if c, k := p.calls.Load(), p.checks.Load(); c != 1+rotations || k != 0 {
		t.Fatalf("%d rotations: %d calls and %d version checks, want %d and 0", rotations, c, k, 1+rotations)
	}
}
