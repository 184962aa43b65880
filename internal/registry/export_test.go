package registry

import (
	"context"
	"sync"
	"time"
)

// Unopened reports whether connection name is in r's view with its record
// still sealed (loaded at start, not used yet).
func Unopened(r *Registry, name string) bool {
	s := r.slot(name)
	return s != nil && s.opened.Load() == nil
}

// SetClock makes r seal generations by now (a worker's clock ahead or
// behind).
func SetClock(r *Registry, now func() time.Time) { r.now = now }

// ExpectOwn registers a write of connection name under way through r: the
// record val, sealing plaintext pt at generation gen.
func ExpectOwn(r *Registry, name string, val, pt []byte, gen uint64) (forget func()) {
	return r.expectOwn(name, &ownWrite{val: val, pt: pt, gen: gen})
}

// SeenGens is the number of generations r remembers outside its view.
func SeenGens(r *Registry) int {
	r.genMu.Lock()
	defer r.genMu.Unlock()
	return len(r.seenGen)
}

// DeleteRead deletes key of bucket what ("connections", "secrets") as a
// delete does once it has read the record stored at revision rev with
// generation gen.
func DeleteRead(r *Registry, what, key string, gen, rev uint64) error {
	b := r.conns
	if what == "secrets" {
		b = r.secrets
	}
	return r.deleteKey(context.Background(), b, key, gen, rev)
}

// StoredGen is the generation a stored record carries.
func StoredGen(raw []byte) uint64 { return storedGen(raw) }

// IsOwnWrite reports whether r recognises val as the record of a write of
// connection name under way through it (the watcher then applies it without
// opening it).
func IsOwnWrite(r *Registry, name string, val []byte) bool {
	_, ok := r.takeOwnWrite(name, val)
	return ok
}

// HoldConnections takes the lock under which the connections watcher applies
// an entry and a put adopts its own write, until release is called: a put
// meanwhile writes its record, then waits before adopting it.
func HoldConnections(r *Registry) (release func()) {
	r.conns.applyMu.Lock()
	var once sync.Once
	return func() { once.Do(r.conns.applyMu.Unlock) }
}
