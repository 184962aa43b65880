package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// fakeProvider counts calls and can block, fail or change its version.
type fakeProvider struct {
	calls, checks atomic.Int64
	mu            sync.Mutex
	version       string
	value         string
	err           error
	gate          chan struct{}
}

func (f *fakeProvider) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return provider.Secret{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return provider.Secret{}, f.err
	}
	return provider.Secret{Version: f.version, Data: []byte(f.value + "@" + req.Secret)}, nil
}

func (f *fakeProvider) set(version, value string, err error) {
	f.mu.Lock()
	f.version, f.value, f.err = version, value, err
	f.mu.Unlock()
}

type checkingProvider struct{ *fakeProvider }

func (c checkingProvider) CurrentVersion(ctx context.Context, req provider.Request) (string, error) {
	c.checks.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version, c.err
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T, max int) (*Store, *clock) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s := New(Options{MaxEntries: max, Now: clk.now})
	t.Cleanup(s.Close)
	return s, clk
}

func TestConcurrentMissesMakeOneCall(t *testing.T) {
	s, _ := newStore(t, 100)
	p := &fakeProvider{version: "v1", value: "x", gate: make(chan struct{})}
	r := s.Wrap("c", Policy{TTL: time.Minute}, p)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sec, err := r.Resolve(context.Background(), provider.Request{Secret: "db"})
			if err == nil && string(sec.Data) != "x@db" {
				err = fmt.Errorf("got %q", sec.Data)
			}
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(p.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := p.calls.Load(); n != 1 {
		t.Fatalf("provider calls = %d, want 1", n)
	}
	sec, err := r.Resolve(context.Background(), provider.Request{Secret: "db"})
	if err != nil || !sec.Cached || p.calls.Load() != 1 {
		t.Fatalf("second resolve: cached=%v err=%v calls=%d", sec.Cached, err, p.calls.Load())
	}
}

func TestTTLStaleAndFresh(t *testing.T) {
	unavailable := fmt.Errorf("reading: %w", events.ErrUnavailable)
	cases := []struct {
		name      string
		maxStale  time.Duration
		advance   time.Duration
		err       error
		wantErr   error
		wantStale bool
	}{
		{"within ttl is cached", 0, 30 * time.Second, unavailable, nil, false},
		{"past ttl, provider down, no max_stale", 0, 2 * time.Minute, unavailable, events.ErrUnavailable, false},
		{"past ttl, provider down, within max_stale", time.Hour, 2 * time.Minute, unavailable, nil, true},
		{"past max_stale", time.Hour, 2 * time.Hour, unavailable, events.ErrUnavailable, false},
		{"not found is never served stale", time.Hour, 2 * time.Minute, fmt.Errorf("x: %w", events.ErrNotFound), events.ErrNotFound, false},
		{"throttled serves stale", time.Hour, 2 * time.Minute, fmt.Errorf("x: %w", events.ErrThrottled), nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newStore(t, 10)
			p := &fakeProvider{version: "v1", value: "old"}
			r := s.Wrap("c", Policy{TTL: time.Minute, MaxStale: tc.maxStale}, p)
			if _, err := r.Resolve(context.Background(), provider.Request{Secret: "db"}); err != nil {
				t.Fatal(err)
			}
			p.set("v2", "new", tc.err)
			clk.add(tc.advance)
			sec, err := r.Resolve(context.Background(), provider.Request{Secret: "db"})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (sec.Stale != tc.wantStale || string(sec.Data) != "old@db") {
				t.Fatalf("stale=%v data=%q, want stale=%v old value", sec.Stale, sec.Data, tc.wantStale)
			}
		})
	}
	t.Run("fresh bypasses", func(t *testing.T) {
		s, _ := newStore(t, 10)
		p := &fakeProvider{version: "v1", value: "old"}
		r := s.Wrap("c", Policy{TTL: time.Minute}, p)
		_, _ = r.Resolve(context.Background(), provider.Request{Secret: "db"})
		p.set("v2", "new", nil)
		sec, err := r.Resolve(context.Background(), provider.Request{Secret: "db", Fresh: true})
		if err != nil || sec.Cached || string(sec.Data) != "new@db" {
			t.Fatalf("fresh: %q cached=%v err=%v", sec.Data, sec.Cached, err)
		}
		sec, _ = r.Resolve(context.Background(), provider.Request{Secret: "db"})
		if string(sec.Data) != "new@db" || !sec.Cached {
			t.Fatalf("fresh result not cached: %q", sec.Data)
		}
	})
}

func TestVersionCheckAndRefreshAhead(t *testing.T) {
	s, clk := newStore(t, 10)
	fp := &fakeProvider{version: "v1", value: "one"}
	p := checkingProvider{fp}
	r := s.Wrap("c", Policy{TTL: time.Minute}, p)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, provider.Request{Secret: "db"}); err != nil {
		t.Fatal(err)
	}
	// TTL passes, version unchanged: one check, no read.
	clk.add(2 * time.Minute)
	sec, err := r.Resolve(ctx, provider.Request{Secret: "db"})
	if err != nil || string(sec.Data) != "one@db" || fp.calls.Load() != 1 || fp.checks.Load() != 1 {
		t.Fatalf("after ttl: %q err=%v calls=%d checks=%d", sec.Data, err, fp.calls.Load(), fp.checks.Load())
	}
	// Rotation: after the TTL, exactly one more read.
	fp.set("v2", "two", nil)
	clk.add(2 * time.Minute)
	sec, err = r.Resolve(ctx, provider.Request{Secret: "db"})
	if err != nil || string(sec.Data) != "two@db" || fp.calls.Load() != 2 {
		t.Fatalf("after rotation: %q err=%v calls=%d", sec.Data, err, fp.calls.Load())
	}
	// Refresh ahead: a hit at 90% of the TTL answers from cache at once and
	// refreshes in the background.
	fp.set("v3", "three", nil)
	fp.gate = make(chan struct{})
	clk.add(54 * time.Second)
	sec, err = r.Resolve(ctx, provider.Request{Secret: "db"})
	if err != nil || string(sec.Data) != "two@db" || !sec.Cached {
		t.Fatalf("hit during refresh: %q err=%v", sec.Data, err)
	}
	close(fp.gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		sec, _ = r.Resolve(ctx, provider.Request{Secret: "db"})
		if string(sec.Data) == "three@db" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("background refresh never landed")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestInvalidateAndBound(t *testing.T) {
	s, _ := newStore(t, 3)
	p := &fakeProvider{version: "v1", value: "x"}
	a := s.Wrap("a", Policy{TTL: time.Hour}, p)
	b := s.Wrap("b", Policy{TTL: time.Hour}, p)
	ctx := context.Background()
	for _, r := range []provider.Resolver{a, b} {
		for _, n := range []string{"s1"} {
			_, _ = r.Resolve(ctx, provider.Request{Secret: n})
		}
	}
	_, _ = a.Resolve(ctx, provider.Request{Secret: "s2"})
	if s.Len() != 3 {
		t.Fatalf("len = %d", s.Len())
	}
	s.Invalidate("a", "s1")
	if s.Len() != 2 {
		t.Fatalf("after secret invalidate len = %d, want 2", s.Len())
	}
	s.Invalidate("a", "")
	if s.Len() != 1 {
		t.Fatalf("after conn invalidate len = %d, want 1", s.Len())
	}
	before := p.calls.Load()
	_, _ = b.Resolve(ctx, provider.Request{Secret: "s1"})
	if p.calls.Load() != before {
		t.Fatal("other connection's entry was dropped")
	}
	for i := 0; i < 10; i++ {
		_, _ = a.Resolve(ctx, provider.Request{Secret: fmt.Sprint("k", i)})
	}
	if s.Len() != 3 {
		t.Fatalf("bound not kept: len = %d", s.Len())
	}
}

func TestInvalidateDuringFetchDoesNotStore(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "old", gate: make(chan struct{})}
	r := s.Wrap("c", Policy{TTL: time.Hour}, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.Resolve(context.Background(), provider.Request{Secret: "db"})
	}()
	for p.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.Invalidate("c", "")
	close(p.gate)
	<-done
	if s.Len() != 0 {
		t.Fatal("a value fetched before invalidation was stored")
	}
}

func TestDeadlineIsTimeout(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "x", gate: make(chan struct{})}
	defer close(p.gate)
	r := s.Wrap("c", Policy{TTL: time.Hour}, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := r.Resolve(ctx, provider.Request{Secret: "db"})
	if !errors.Is(err, events.ErrTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
}

// TestInvalidateSecretKeepsSiblings: invalidating one secret leaves its
// siblings cached, and with their max_stale fallback when the provider is down.
func TestInvalidateSecretKeepsSiblings(t *testing.T) {
	s, clk := newStore(t, 100)
	p := &fakeProvider{version: "v1", value: "x"}
	r := s.Wrap("c", Policy{TTL: time.Minute, MaxStale: time.Hour}, p)
	ctx := context.Background()
	for _, n := range []string{"db1", "db2"} {
		if _, err := r.Resolve(ctx, provider.Request{Secret: n}); err != nil {
			t.Fatal(err)
		}
	}
	s.Invalidate("c", "db1")
	sec, err := r.Resolve(ctx, provider.Request{Secret: "db2"})
	if err != nil || !sec.Cached {
		t.Fatalf("sibling after invalidate: cached=%v err=%v, want cached", sec.Cached, err)
	}
	if _, ok := s.Peek("c", provider.Request{Secret: "db1"}); ok {
		t.Fatal("the invalidated secret is still cached")
	}
	// Past the TTL with the provider down, the sibling is served stale.
	clk.add(2 * time.Minute)
	p.set("v1", "x", events.ErrUnavailable)
	sec, err = r.Resolve(ctx, provider.Request{Secret: "db2"})
	if err != nil || !sec.Stale {
		t.Fatalf("sibling with provider down: stale=%v err=%v, want stale", sec.Stale, err)
	}
}

// TestInvalidateSecretDuringFetchDoesNotStore: a value of a secret fetched
// while that secret was invalidated is not stored; a sibling's is.
func TestInvalidateSecretDuringFetchDoesNotStore(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "old", gate: make(chan struct{})}
	r := s.Wrap("c", Policy{TTL: time.Hour}, p)
	var wg sync.WaitGroup
	for _, n := range []string{"db", "other"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = r.Resolve(context.Background(), provider.Request{Secret: n})
		}()
	}
	for p.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	s.Invalidate("c", "db")
	close(p.gate)
	wg.Wait()
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); ok {
		t.Fatal("a value fetched before its invalidation was stored")
	}
	if _, ok := s.Peek("c", provider.Request{Secret: "other"}); !ok {
		t.Fatal("the sibling's value was not stored")
	}
}

// InvalidateConns drops the entries of the connections it matches, and only
// theirs, and a fetch of a matched connection under way does not store.
func TestInvalidateConns(t *testing.T) {
	s, _ := newStore(t, 10)
	p := &fakeProvider{version: "v1", value: "x"}
	a := s.Wrap("a", Policy{TTL: time.Hour}, p)
	b := s.Wrap("b", Policy{TTL: time.Hour}, p)
	ctx := context.Background()
	for _, r := range []provider.Resolver{a, b} {
		for _, n := range []string{"s1", "s2"} {
			if _, err := r.Resolve(ctx, provider.Request{Secret: n}); err != nil {
				t.Fatal(err)
			}
		}
	}
	gated := &fakeProvider{version: "v1", value: "old", gate: make(chan struct{})}
	c := s.Wrap("c", Policy{TTL: time.Hour}, gated)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Resolve(ctx, provider.Request{Secret: "db"})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for gated.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the fetch never started")
		}
		time.Sleep(time.Millisecond)
	}
	s.InvalidateConns(func(conn string) bool { return conn != "b" })
	close(gated.gate)
	<-done
	if s.Len() != 2 {
		t.Fatalf("len = %d, want b's 2", s.Len())
	}
	for _, n := range []string{"s1", "s2"} {
		if _, ok := s.Peek("b", provider.Request{Secret: n}); !ok {
			t.Fatalf("b's %s was dropped", n)
		}
		if _, ok := s.Peek("a", provider.Request{Secret: n}); ok {
			t.Fatalf("a's %s was kept", n)
		}
	}
	if _, ok := s.Peek("c", provider.Request{Secret: "db"}); ok {
		t.Fatal("the fetch under way stored its outdated value")
	}
}
