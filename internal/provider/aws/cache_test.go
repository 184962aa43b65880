package aws

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// clock is a manual clock for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cachedProvider is the AWS provider of a fresh fake behind the real cache.
func cachedProvider(t *testing.T, pol cache.Policy) (*awsfake.Server, provider.Resolver, *clock) {
	t.Helper()
	isolate(t)
	fake := awsfake.New(t)
	p := newProvider(t, accessKeyConn(fake, fake.AddUser("bio")))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	store := cache.New(cache.Options{MaxEntries: 100, Now: clk.Now})
	t.Cleanup(store.Close)
	return fake, store.Wrap("aws-sm-bio", pol, p), clk
}

func mustResolve(t *testing.T, r provider.Resolver, want string) provider.Secret {
	t.Helper()
	s, err := r.Resolve(ctxT(t), provider.Request{Secret: "db"})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if string(s.Data) != want {
		t.Fatalf("Resolve = %q, want %q", s.Data, want)
	}
	return s
}

func TestCacheSeesRotationAfterTTLWithOneRead(t *testing.T) {
	fake, r, clk := cachedProvider(t, cache.Policy{TTL: time.Minute})
	fake.PutSecretString("db", "v1")
	mustResolve(t, r, "v1")
	v2 := fake.PutSecretString("db", "v2") // rotation: new AWSCURRENT

	clk.Add(30 * time.Second)
	if s := mustResolve(t, r, "v1"); !s.Cached {
		t.Errorf("within the TTL the reply was not cached")
	}
	if g, d := fake.Calls(awsfake.OpGetSecretValue), fake.Calls(awsfake.OpDescribeSecret); g != 1 || d != 0 {
		t.Fatalf("within the TTL: GetSecretValue=%d DescribeSecret=%d, want 1 and 0", g, d)
	}

	clk.Add(time.Minute)
	if s := mustResolve(t, r, "v2"); s.Version != v2 {
		t.Errorf("version %s, want %s", s.Version, v2)
	}
	if g, d := fake.Calls(awsfake.OpGetSecretValue), fake.Calls(awsfake.OpDescribeSecret); g != 2 || d != 1 {
		t.Errorf("rotation: GetSecretValue=%d DescribeSecret=%d, want 2 (one read for the rotation) and 1", g, d)
	}

	// TTL runs out again with no rotation: DescribeSecret only.
	clk.Add(2 * time.Minute)
	mustResolve(t, r, "v2")
	if g, d := fake.Calls(awsfake.OpGetSecretValue), fake.Calls(awsfake.OpDescribeSecret); g != 2 || d != 2 {
		t.Errorf("unchanged: GetSecretValue=%d DescribeSecret=%d, want 2 and 2", g, d)
	}
}

func TestCacheSlowUpstreamNeverDelaysCachedReply(t *testing.T) {
	fake, r, clk := cachedProvider(t, cache.Policy{TTL: time.Minute})
	fake.PutSecretString("db", "v1")
	mustResolve(t, r, "v1")
	fake.PutSecretString("db", "v2")
	fake.SetLatency(awsfake.OpAny, 700*time.Millisecond)

	clk.Add(55 * time.Second) // past the refresh-ahead point, within the TTL
	start := time.Now()
	s := mustResolve(t, r, "v1")
	if took := time.Since(start); took > 200*time.Millisecond || !s.Cached {
		t.Fatalf("cached reply took %s (cached=%v) while upstream takes 700ms", took, s.Cached)
	}
	// The background refresh sees the rotation and reads it once.
	natstest.Eventually(t, 5*time.Second, "background refresh", func() bool {
		return fake.Calls(awsfake.OpGetSecretValue) == 2
	})
	natstest.Eventually(t, 5*time.Second, "refreshed value stored", func() bool {
		s, err := r.Resolve(ctxT(t), provider.Request{Secret: "db"})
		return err == nil && string(s.Data) == "v2" && s.Cached
	})
	if d := fake.Calls(awsfake.OpDescribeSecret); d != 1 {
		t.Errorf("DescribeSecret = %d, want 1", d)
	}
}

func TestCacheThrottlingStorm(t *testing.T) {
	tests := []struct {
		name      string
		maxStale  time.Duration
		advance   time.Duration
		wantStale bool
	}{
		{name: "stale within max_stale", maxStale: time.Hour, advance: 2 * time.Minute, wantStale: true},
		{name: "no max_stale", maxStale: 0, advance: 2 * time.Minute},
		{name: "past max_stale", maxStale: time.Hour, advance: 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, r, clk := cachedProvider(t, cache.Policy{TTL: time.Minute, MaxStale: tt.maxStale})
			fake.PutSecretString("db", "v1")
			mustResolve(t, r, "v1")
			fake.FailFor(awsfake.OpAny, "ThrottlingException", time.Minute)
			clk.Add(tt.advance)
			s, err := r.Resolve(ctxT(t), provider.Request{Secret: "db"})
			// Each call was retried to the retryer's bound before giving up.
			if d, g := fake.Calls(awsfake.OpDescribeSecret), fake.Calls(awsfake.OpGetSecretValue); d != 4 || g != 1+4 {
				t.Errorf("DescribeSecret=%d GetSecretValue=%d, want 4 and 1+4 (retried)", d, g)
			}
			if tt.wantStale {
				if err != nil || !s.Stale || string(s.Data) != "v1" {
					t.Fatalf("got %q stale=%v err=%v, want the stale v1", s.Data, s.Stale, err)
				}
				return
			}
			if !errors.Is(err, events.ErrThrottled) {
				t.Fatalf("err = %v, want throttled", err)
			}
		})
	}
}
