package cache

import (
	"slices"
	"sync"
	"sync/atomic"
)

// entries is the cache's bounded map. A hit takes no lock: a lookup in a
// sync.Map and, at most once a millisecond per entry, an atomic store of the
// time it was used. Past the bound, the store that finds it over evicts the
// least recently used entries (down to 1/16 under the bound, so an eviction's
// scan is paid once per many stores).
type entries struct {
	max     int
	m       sync.Map // key → *entry
	n       atomic.Int64
	evictMu sync.Mutex
}

func (es *entries) get(k key, now int64) (*entry, bool) {
	v, ok := es.m.Load(k)
	if !ok {
		return nil, false
	}
	e := v.(*entry)
	if now-e.used.Load() > 1e6 {
		e.used.Store(now)
	}
	return e, true
}

// peek is get without marking the entry used.
func (es *entries) peek(k key) (*entry, bool) {
	v, ok := es.m.Load(k)
	if !ok {
		return nil, false
	}
	return v.(*entry), true
}

func (es *entries) add(k key, e *entry, now int64) {
	e.used.Store(now)
	if prev, loaded := es.m.Swap(k, e); loaded {
		prev.(*entry).gone.Store(true)
	} else if es.n.Add(1) > int64(es.max) {
		es.evict()
	}
}

// replace swaps old for e under k, if old is still there.
func (es *entries) replace(k key, old, e *entry) bool {
	e.used.Store(old.used.Load())
	if !es.m.CompareAndSwap(k, old, e) {
		return false
	}
	old.gone.Store(true)
	return true
}

func (es *entries) remove(k key) {
	if v, loaded := es.m.LoadAndDelete(k); loaded {
		v.(*entry).gone.Store(true)
		es.n.Add(-1)
	}
}

// each calls fn for every key.
func (es *entries) each(fn func(k key)) {
	es.m.Range(func(k, _ any) bool {
		fn(k.(key))
		return true
	})
}

func (es *entries) len() int { return int(es.n.Load()) }

// evict brings the map back under the bound. A store that finds another
// evicting leaves it to that one, which checks the count again after it lets
// go of the lock: a store counted while the scan ran is seen then, so the
// bound holds once the stores end.
func (es *entries) evict() {
	for es.n.Load() > int64(es.max) {
		if !es.evictMu.TryLock() {
			return // another store is evicting; it looks again when done
		}
		es.evictLocked()
		es.evictMu.Unlock()
	}
}

func (es *entries) evictLocked() {
	over := es.n.Load() - int64(es.max-es.max/16)
	if over <= 0 {
		return
	}
	type aged struct {
		k    key
		used int64
	}
	all := make([]aged, 0, es.max+16)
	es.m.Range(func(k, v any) bool {
		all = append(all, aged{k.(key), v.(*entry).used.Load()})
		return true
	})
	slices.SortFunc(all, func(a, b aged) int {
		switch {
		case a.used < b.used:
			return -1
		case a.used > b.used:
			return 1
		}
		return 0
	})
	for _, a := range all[:min(int(over), len(all))] {
		es.remove(a.k)
	}
}
