package cache

import (
	"context"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Refresh is Invalidate for a secret known to have changed in the cloud (a
// rotation event): its cached values stop being served at once, and each is
// re-read in the background (one provider call per cached key, shared with
// any request that misses meanwhile), so the next request finds the new
// value. Until the re-read succeeds, an old value is kept as if its TTL had
// run out now: the max_stale fallback while the provider is unavailable,
// never a hit. A secret that was not cached is not read. It returns how many
// values are being re-read.
func (s *Store) Refresh(conn, secret string) int {
	s.mu.Lock()
	v, ok := s.gens.Load(conn)
	if !ok {
		// Nothing of conn cached nor being fetched (fetchGen).
		s.mu.Unlock()
		return 0
	}
	prev := s.gen(conn, secret)
	gen := generation{conn: prev.conn, secret: s.tick.Add(1)}
	v.(*connGen).setSecret(secret, gen.secret)
	s.changes.Add(1)
	s.mu.Unlock()
	now := s.opts.Now()
	n := 0
	s.m.each(func(k key) {
		if k.conn != conn || k.secret != secret {
			return
		}
		e, ok := s.m.peek(k)
		if !ok || e.gen != prev {
			return
		}
		ne := s.newEntry(e.owner, e.sec, gen, now.Add(-e.ttl), e.ttl)
		ne.refreshing.Store(true)
		// The re-read's flight starts before the outdated value goes in
		// (and before Refresh returns): a request that misses on it joins
		// the flight instead of starting its own, which would check the
		// version of a value known to have changed.
		ne.owner.reload(k, gen, ne)
		n++
		s.m.replace(k, e, ne) // fails if e went meanwhile: the flight stores the new value anyway
	})
	metrics.CacheEntries.Set(float64(s.m.len()))
	return n
}

// reload re-reads k in the background under gen, without the version check
// (the value is known to have changed: one call, not two). The flight is
// registered before reload returns, so that a request missing from then on
// joins it.
func (c *cached) reload(k key, gen generation, e *entry) {
	s := c.s
	metrics.Cache.WithLabelValues("refresh").Inc()
	req := provider.Request{Secret: k.secret, Version: k.version}
	ch := s.sf.DoChan(k.flight(gen), func() (any, error) {
		ctx, cancel := context.WithTimeout(s.bgCtx, s.opts.UpstreamTimeout)
		defer cancel()
		return c.load(ctx, k, gen, nil, req, true)
	})
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer e.refreshing.Store(false)
		<-ch // the call ends with s.bgCtx (Close)
	}()
}

// LimitTTL caps the TTL of connection conn's values at d (d <= 0 lifts the
// cap): while a connection's change events cannot be received, its values
// are trusted for the short degraded TTL only. Values already cached are
// capped too (one validated an hour ago with a 12h TTL and a 1m cap is
// re-validated on its next request).
func (s *Store) LimitTTL(conn string, d time.Duration) {
	s.mu.Lock()
	if d <= 0 {
		delete(s.caps, conn)
		s.mu.Unlock()
		return
	}
	if s.caps == nil {
		s.caps = map[string]time.Duration{}
	}
	s.caps[conn] = d
	s.mu.Unlock()
	s.m.each(func(k key) {
		if k.conn == conn {
			if e, ok := s.m.peek(k); ok {
				s.capEntry(k, e)
			}
		}
	})
}

// ttl is the TTL of a value of conn stored now: policy's, capped by LimitTTL.
func (s *Store) ttl(conn string, policy time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.caps[conn]; ok && c < policy {
		return c
	}
	return policy
}

// capEntry replaces e (cached under k) by a copy with the capped TTL when
// its own is longer. store calls it after adding, so a cap set while a value
// was being stored still applies to it.
func (s *Store) capEntry(k key, e *entry) {
	d := s.ttl(k.conn, e.ttl)
	if d >= e.ttl {
		return
	}
	ne := s.newEntry(e.owner, e.sec, e.gen, e.validated, d)
	s.m.replace(k, e, ne)
}
