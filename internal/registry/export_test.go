package registry

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	w := &ownWrite{val: val, gen: gen}
	w.c, w.err = decodeConnectionJSON(name, pt)
	return r.expectOwn(name, w)
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

// MarkerReads makes r's reads of secrets' delete markers hang until release
// is called (or the read's context ends), as when JetStream does not answer.
type MarkerReads struct {
	jetstream.Stream
	entered, release   chan struct{}
	enterOnce, relOnce sync.Once
	ended              atomic.Bool
}

// HangMarkerReads installs MarkerReads on r.
func HangMarkerReads(r *Registry) (*MarkerReads, error) {
	st, err := r.streamOf(context.Background(), r.secrets)
	if err != nil {
		return nil, err
	}
	h := &MarkerReads{Stream: st, entered: make(chan struct{}), release: make(chan struct{})}
	r.secrets.streamMu.Lock()
	r.secrets.stream = h
	r.secrets.streamMu.Unlock()
	return h, nil
}

func (h *MarkerReads) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	h.enterOnce.Do(func() { close(h.entered) })
	defer h.ended.Store(true)
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.Stream.GetMsg(ctx, seq, opts...)
}

// Entered is closed once a read has begun.
func (h *MarkerReads) Entered() <-chan struct{} { return h.entered }

// Ended reports whether a read has returned.
func (h *MarkerReads) Ended() bool { return h.ended.Load() }

// Release lets the reads through.
func (h *MarkerReads) Release() { h.relOnce.Do(func() { close(h.release) }) }

// SetFaults installs f on r (before r is used concurrently).
func SetFaults(r *Registry, f Faults) { r.fault = &f }

// KeptForTimeout is the deadline of a secret put's check after its write.
const KeptForTimeout = keptForTimeout

// SecretStored reports whether secret key holds a record (not a delete
// marker) as r's check after a put reads it: from the stream's leader on a
// replicated bucket, which a listing through a consumer or a direct get (a
// follower behind the leader may answer) does not guarantee.
func SecretStored(ctx context.Context, r *Registry, key string) (bool, error) {
	_, _, err := r.checkedRead(ctx, r.secrets, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	}
	return false, err
}
