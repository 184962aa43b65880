// Package cache is the per-worker secret cache: a bounded LRU shared by every
// connection, wrapped around a provider as a provider itself. Concurrent misses
// of one key make one provider call; a value past its TTL is re-validated with
// the provider's cheap version check when it has one; hot entries are refreshed
// ahead of expiry in the background; and while the provider is unavailable a
// value within max_stale is served, marked stale.
package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// hits is the hit counter, resolved once: it is on every cached request's path.
var hits = metrics.Cache.WithLabelValues("hit")

// DefaultMaxEntries bounds the cache unless configured.
const DefaultMaxEntries = 10000

// Options configure a Store.
type Options struct {
	// MaxEntries bounds the number of cached values (default 10,000).
	MaxEntries int
	// UpstreamTimeout bounds a provider call made on behalf of waiting
	// requests, which may give up earlier (default 30s).
	UpstreamTimeout time.Duration
	// RefreshAhead is the fraction of the TTL after which a hit triggers a
	// background refresh (default 0.8).
	RefreshAhead float64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Policy is a connection's cache policy.
type Policy struct {
	TTL      time.Duration
	MaxStale time.Duration
}

// Store is the cache shared by all connections of a worker. A hit takes no
// lock (entries, and the generations in sync.Maps); invalidations are
// serialized by mu.
type Store struct {
	opts Options
	m    entries
	sf   singleflight.Group
	mu   sync.Mutex
	// gens holds, for each connection invalidated, its generation and those
	// of its secrets invalidated since (connGen): a value fetched under an
	// older generation is never stored nor served. Every invalidation takes
	// a new value of tick, so a generation never comes back.
	gens sync.Map // string → *connGen
	tick atomic.Uint64
	// changes counts the generation changes, each counted once the new
	// generation is in gens: a Ref whose generation was checked under the
	// current count needs no new check.
	changes atomic.Uint64
	// caps are the TTL caps of connections (LimitTTL, refresh.go).
	caps  map[string]time.Duration
	bgCtx context.Context
	stop  context.CancelFunc
	bg    sync.WaitGroup
}

type key struct {
	conn, secret, version string
}

// connGen is a connection's generation and its secrets' (secret name →
// uint64), replaced as a whole when the connection is invalidated.
type connGen struct {
	gen     uint64
	secrets atomic.Pointer[sync.Map] // created on the first secret invalidated
}

// setSecret sets a secret's generation; s.mu is held.
func (cg *connGen) setSecret(secret string, gen uint64) {
	m := cg.secrets.Load()
	if m == nil {
		m = &sync.Map{}
		cg.secrets.Store(m)
	}
	m.Store(secret, gen)
}

// generation is what a value was fetched under: its connection's and its
// secret's invalidation counts.
type generation struct{ conn, secret uint64 }

func (k key) flight(g generation) string {
	return k.conn + "\x00" + k.secret + "\x00" + k.version + "\x00" + strconv.FormatUint(g.conn, 10) + "\x00" + strconv.FormatUint(g.secret, 10)
}

type entry struct {
	owner     *cached
	used      atomic.Int64 // unix nanoseconds (entries)
	sec       provider.Secret
	gen       generation
	validated time.Time
	ttl       time.Duration
	// expires (validated+ttl) and refreshAt (validated plus the
	// refresh-ahead fraction of ttl) are worked out once, not on each hit.
	expires, refreshAt time.Time
	refreshing         atomic.Bool
	// gone is set once the entry has left the map (removed, or replaced
	// by another), for the Refs holding it.
	gone atomic.Bool
}

// newEntry is the entry of sec, validated at validated for ttl.
func (s *Store) newEntry(owner *cached, sec provider.Secret, gen generation, validated time.Time, ttl time.Duration) *entry {
	return &entry{owner: owner, sec: sec, gen: gen, validated: validated, ttl: ttl,
		expires: validated.Add(ttl), refreshAt: validated.Add(time.Duration(float64(ttl) * s.opts.RefreshAhead))}
}

// New returns an empty store.
func New(o Options) *Store {
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 30 * time.Second
	}
	if o.RefreshAhead <= 0 || o.RefreshAhead >= 1 {
		o.RefreshAhead = 0.8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{opts: o, m: entries{max: o.MaxEntries}, bgCtx: ctx, stop: cancel}
}

// Close stops background refreshes and waits for them.
func (s *Store) Close() {
	s.stop()
	s.bg.Wait()
}

// Len is the number of cached values.
func (s *Store) Len() int { return s.m.len() }

// gen is the generation of a secret, without a lock.
func (s *Store) gen(conn, secret string) generation {
	v, ok := s.gens.Load(conn)
	if !ok {
		return generation{}
	}
	cg := v.(*connGen)
	g := generation{conn: cg.gen}
	if m := cg.secrets.Load(); m != nil {
		if sv, ok := m.Load(secret); ok {
			g.secret = sv.(uint64)
		}
	}
	return g
}

// fetchGen is the generation a fetch of a secret of conn starts under. It
// gives conn a generation first: from then on, invalidations of conn outdate
// what the fetch gets (Invalidate skips connections without one, so that
// the connections never fetched cost no memory).
func (s *Store) fetchGen(conn, secret string) generation {
	if _, ok := s.gens.Load(conn); !ok {
		s.gens.LoadOrStore(conn, &connGen{})
	}
	return s.gen(conn, secret)
}

// Invalidate drops the entries of a connection, or of one of its secrets when
// secret is not empty (the connection's other secrets stay cached, with their
// max_stale fallback). A provider call already under way for them will not
// store its result.
func (s *Store) Invalidate(conn, secret string) {
	s.mu.Lock()
	// A connection with no generation has nothing cached nor being fetched
	// (a fetch creates it before asking the provider): nothing to outdate.
	if v, ok := s.gens.Load(conn); ok {
		if secret == "" {
			// The connection's new generation outdates every secret's.
			s.gens.Store(conn, &connGen{gen: s.tick.Add(1)})
		} else {
			v.(*connGen).setSecret(secret, s.tick.Add(1))
		}
		s.changes.Add(1)
	}
	s.mu.Unlock()
	if s.m.len() == 0 {
		return
	}
	s.m.each(func(k key) {
		if k.conn == conn && (secret == "" || k.secret == secret) {
			s.m.remove(k)
		}
	})
	metrics.CacheEntries.Set(float64(s.m.len()))
}

// InvalidateConns drops the entries of every connection match accepts, as
// Invalidate(conn, "") would for each, in one pass over the store (the
// secrets bucket created again outdates every builtin connection's
// secrets at once).
func (s *Store) InvalidateConns(match func(conn string) bool) {
	s.mu.Lock()
	s.gens.Range(func(k, _ any) bool {
		if conn := k.(string); match(conn) {
			s.gens.Store(conn, &connGen{gen: s.tick.Add(1)})
		}
		return true
	})
	s.changes.Add(1)
	s.mu.Unlock()
	s.m.each(func(k key) {
		if match(k.conn) {
			s.m.remove(k)
		}
	})
	metrics.CacheEntries.Set(float64(s.m.len()))
}

// Peek returns a value of connection conn that is cached and within its TTL,
// as Resolve would (refreshing it ahead of expiry in the background), without
// ever calling the provider: the fast path of a hit. ok is false for a miss,
// an expired value, or a fresh request.
func (s *Store) Peek(conn string, req provider.Request) (provider.Secret, bool) {
	if req.Fresh {
		return provider.Secret{}, false
	}
	k := key{conn: conn, secret: req.Secret, version: req.Version}
	now := s.opts.Now()
	e, ok := s.m.get(k, now.UnixNano())
	if !ok || e.gen != s.gen(conn, req.Secret) {
		return provider.Secret{}, false
	}
	return s.served(k, e, now, req)
}

// served is the value of e, the current entry of k, at now: a hit within
// its TTL (refreshed ahead of expiry in the background), else a miss.
func (s *Store) served(k key, e *entry, now time.Time, req provider.Request) (provider.Secret, bool) {
	if !now.Before(e.expires) {
		return provider.Secret{}, false
	}
	hits.Inc()
	if now.After(e.refreshAt) && e.refreshing.CompareAndSwap(false, true) {
		e.owner.refreshInBackground(k, e.gen, e, req)
	}
	out := e.sec
	out.Cached = true
	return out, true
}

// Ref is a handle on one key of the store (a connection's secret and
// version), for a caller asking for it again and again (the fast path's memo
// of a request): it keeps the entry a hit found, so that while that entry
// stays in the store and no generation changes, a hit on it takes no map
// lookup. It is safe for concurrent use.
type Ref struct {
	k   key
	req provider.Request
	hit atomic.Pointer[refHit]
}

// refHit is an entry found for a Ref, its generation current when changes
// was changes.
type refHit struct {
	e       *entry
	changes uint64
}

// Ref is the handle of connection conn's secret at version ("" current).
func (s *Store) Ref(conn, secret, version string) *Ref {
	return &Ref{k: key{conn: conn, secret: secret, version: version}, req: provider.Request{Secret: secret, Version: version}}
}

// PeekRef is Peek(conn, {secret, version}) of r's key, now: a value is
// judged when it is served, never at a request's arrival (a request that
// waited in its lane must not get a value that expired meanwhile).
func (s *Store) PeekRef(r *Ref) (provider.Secret, bool) {
	now := s.opts.Now()
	var e *entry
	if h := r.hit.Load(); h != nil && !h.e.gone.Load() && h.changes == s.changes.Load() {
		// Still the key's entry, and of the current generation: no
		// invalidation came since it was checked (an entry stored with an
		// outdated generation is never the one a Ref holds).
		e = h.e
		if n := now.UnixNano(); n-e.used.Load() > 1e6 {
			e.used.Store(n)
		}
	} else {
		changes := s.changes.Load() // before the generation is read
		var ok bool
		if e, ok = s.m.get(r.k, now.UnixNano()); !ok || e.gen != s.gen(r.k.conn, r.k.secret) {
			r.Forget() // holding no value that is no longer served
			return provider.Secret{}, false
		}
		r.hit.Store(&refHit{e: e, changes: changes})
	}
	return s.served(r.k, e, now, r.req)
}

// Forget lets go of the entry r holds (the next PeekRef looks it up).
func (r *Ref) Forget() { r.hit.Store(nil) }

// Wrap returns next behind the cache for connection conn.
func (s *Store) Wrap(conn string, p Policy, next provider.Resolver) provider.Resolver {
	if p.TTL <= 0 {
		p.TTL = events.DefaultCacheTTL
	}
	return &cached{s: s, conn: conn, policy: p, next: next}
}

type cached struct {
	s      *Store
	conn   string
	policy Policy
	next   provider.Resolver
}

// Resolve serves from the cache or calls the provider.
func (c *cached) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	s := c.s
	if sec, ok := s.Peek(c.conn, req); ok {
		return sec, nil
	}
	k := key{conn: c.conn, secret: req.Secret, version: req.Version}
	gen := s.fetchGen(c.conn, req.Secret)
	var old *entry
	if e, ok := s.m.peek(k); ok && e.gen == gen {
		old = e
	}
	metrics.Cache.WithLabelValues("miss").Inc()
	sec, err := c.fetch(ctx, k, gen, old, req)
	if err == nil {
		return sec, nil
	}
	if old != nil && staleAllowed(err) && s.opts.Now().Before(old.validated.Add(old.ttl+c.policy.MaxStale)) {
		metrics.Cache.WithLabelValues("stale").Inc()
		out := old.sec
		out.Cached, out.Stale = true, true
		return out, nil
	}
	return provider.Secret{}, err
}

// staleAllowed reports whether err means the provider could not answer, as
// opposed to answering no.
func staleAllowed(err error) bool {
	return errors.Is(err, events.ErrUnavailable) || errors.Is(err, events.ErrTimeout) || errors.Is(err, events.ErrThrottled)
}

// fetch makes or joins the one provider call for k, waiting at most until ctx is done.
func (c *cached) fetch(ctx context.Context, k key, gen generation, old *entry, req provider.Request) (provider.Secret, error) {
	flight := k.flight(gen)
	if req.Fresh {
		flight += "\x00fresh"
	}
	ch := c.s.sf.DoChan(flight, func() (any, error) {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.s.opts.UpstreamTimeout)
		defer cancel()
		return c.load(uctx, k, gen, old, req, false)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return provider.Secret{}, r.Err
		}
		return r.Val.(provider.Secret), nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return provider.Secret{}, events.Errorf(events.CodeTimeout, "secret %q: the provider did not answer before the request deadline", k.secret)
		}
		return provider.Secret{}, ctx.Err()
	}
}

// load asks the provider, re-validating old by version when it can, and stores the result.
func (c *cached) load(ctx context.Context, k key, gen generation, old *entry, req provider.Request, refresh bool) (sec provider.Secret, err error) {
	// A provider call runs on a goroutine of its own: a panic there would
	// end the process, so it becomes an internal error (its value, which may
	// hold a payload, is dropped).
	defer func() {
		if p := recover(); p != nil {
			sec, err = provider.Secret{}, fmt.Errorf("provider panicked (%T): %w", p, events.ErrInternal)
		}
	}()
	s := c.s
	// A request that missed just before the previous flight stored its value
	// starts a new flight: it finds the value here instead of calling again.
	if !req.Fresh && !refresh {
		if e, ok := s.m.peek(k); ok && e.gen == gen && s.opts.Now().Before(e.expires) {
			sec := e.sec
			sec.Cached = true
			return sec, nil
		}
	}
	req.Fresh = true
	if old != nil && old.sec.Version != "" {
		if vc, ok := c.next.(provider.VersionChecker); ok {
			if v, err := vc.CurrentVersion(ctx, req); err == nil && v == old.sec.Version {
				metrics.Cache.WithLabelValues("revalidated").Inc()
				sec := old.sec
				c.store(k, gen, sec)
				sec.Cached = true
				return sec, nil
			}
		}
	}
	sec, err = c.next.Resolve(ctx, req)
	if err != nil {
		return provider.Secret{}, err
	}
	if sec.FetchedAt.IsZero() {
		sec.FetchedAt = s.opts.Now()
	}
	sec.Cached, sec.Stale = false, false
	c.store(k, gen, sec)
	return sec, nil
}

func (c *cached) store(k key, gen generation, sec provider.Secret) {
	s := c.s
	if s.gen(k.conn, k.secret) != gen {
		return
	}
	sec.Cached, sec.Stale = false, false
	now := s.opts.Now()
	e := s.newEntry(c, sec, gen, now, s.ttl(k.conn, c.policy.TTL))
	s.m.add(k, e, now.UnixNano())
	s.capEntry(k, e)
	metrics.CacheEntries.Set(float64(s.m.len()))
}

func (c *cached) refreshInBackground(k key, gen generation, e *entry, req provider.Request) {
	s := c.s
	metrics.Cache.WithLabelValues("refresh").Inc()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer e.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(s.bgCtx, s.opts.UpstreamTimeout)
		defer cancel()
		_, _, _ = s.sf.Do(k.flight(gen), func() (any, error) { return c.load(ctx, k, gen, e, req, true) })
	}()
}
