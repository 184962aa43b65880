package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// connSlot is one connection of the watched view. A record loaded at start
// is kept sealed, as stored (raw), until its first use opens it: a worker
// starting with many connections does no per-record work before serving,
// and holds each record once, sealed or open. A record changed after start
// is opened by the watcher at once, so its generation is checked against
// the one it replaces (rollback protection); the record it replaces is
// opened first when it was not yet.
type connSlot struct {
	name string
	// rev is the bucket revision of the record, for compare-and-set puts.
	rev uint64

	mu     sync.Mutex
	raw    []byte
	opened atomic.Pointer[openedConn]
}

// openedConn is a slot's opened record: the connection, or why it cannot be
// opened, and its generation.
type openedConn struct {
	c   events.Connection
	gen uint64
	err error
}

// arena holds the records loaded at start, packed in large pointer-free
// chunks: no per-record allocation, nothing for the garbage collector to
// scan. A chunk is freed once every record in it has been opened (or
// replaced). Used by the connections watcher only.
type arena struct{ chunk []byte }

const arenaChunk = 256 << 10

// copy returns a copy of b in the arena.
func (a *arena) copy(b []byte) []byte {
	if len(b) > arenaChunk/8 {
		return append([]byte(nil), b...)
	}
	if cap(a.chunk)-len(a.chunk) < len(b) {
		a.chunk = make([]byte, 0, arenaChunk)
	}
	n := len(a.chunk)
	a.chunk = append(a.chunk, b...)
	// Capped, so that nothing appended to a record overwrites the next.
	return a.chunk[n : n+len(b) : n+len(b)]
}

func (r *Registry) slot(name string) *connSlot {
	if v, ok := r.view.Load(name); ok {
		return v.(*connSlot)
	}
	return nil
}

// open opens a slot loaded at start, once. Its generation raises the one
// seen for its key without refusing it: it was the first record of its key
// this worker saw, so a generation seen since is a newer state of the
// bucket, which the watcher is about to apply.
func (r *Registry) open(s *connSlot) *openedConn {
	if o := s.opened.Load(); o != nil {
		return o
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.opened.Load(); o != nil {
		return o
	}
	o := &openedConn{}
	var rec sealedRecord
	var pt []byte
	rec, pt, o.err = r.openRecord(r.conns.name, s.name, s.raw)
	if o.err == nil {
		o.gen = rec.Gen
		if r.slot(s.name) != s {
			// No longer in the view (which would carry it): remembered.
			r.raiseGen(r.conns.name, s.name, rec.Gen)
		}
		o.c, o.err = decodeConnectionJSON(s.name, pt)
	}
	s.raw = nil
	r.opened(s.name, o)
	s.opened.Store(o)
	return o
}

// settle opens the view's record of connection name if it is still sealed,
// so that its generation is known before another record of the key (read
// from the bucket) is checked against it.
func (r *Registry) settle(name string) {
	if s := r.slot(name); s != nil {
		r.open(s)
	}
}

// opened accounts for a slot's record just opened (or failed).
func (r *Registry) opened(name string, o *openedConn) {
	r.setSealedOut(name, o.err)
	if o.err != nil {
		r.log.Error().Str("conn", name).Err(o.err).Msg("ignoring unreadable connection record")
		return
	}
	r.openedOK.Add(1)
}

// dropped accounts for a slot leaving the view (replaced or deleted).
func (r *Registry) dropped(s *connSlot) {
	if o := r.open(s); o.err == nil {
		r.openedOK.Add(-1)
	}
}

func (r *Registry) applyConnection(e jetstream.KeyValueEntry, initial bool) *Change {
	name := e.Key()
	old := r.slot(name)
	if initial && !isDelete(e) && old == nil {
		// Loaded at start: opened on first use. The record is copied out
		// of its message (which holds the subject and headers too) into the
		// load's arena, and the name out of the subject.
		name = strings.Clone(name)
		r.view.Store(name, &connSlot{name: name, rev: e.Revision(), raw: r.load.copy(e.Value())})
		r.loadedConns.Add(1)
		return &Change{Kind: KindConnection, Name: name, Initial: true}
	}
	// A change after start, or one of the load at start meeting a slot
	// already there (a put through this worker before Start returned, or a
	// watcher that restarted during the load and brings the state again):
	// the slot's revision and the record's generation decide, as for any
	// change.
	if old != nil && old.rev >= e.Revision() {
		// A put through this worker applied this write (or a later one)
		// already, and notified it (adoptConnection).
		return nil
	}
	if old != nil {
		// The record being replaced is opened first when it was not yet,
		// so the one replacing it is checked against its generation.
		r.open(old)
	}
	if isDelete(e) {
		// The generation the marker carries (purge) is the floor of this
		// worker's next write of the key, and is remembered, above the
		// deleted record's: that record written back is refused. A marker
		// of the load at start is remembered too (one entry per deleted
		// connection whose marker carries a generation: the cost of
		// refusing a replay of a record deleted before this worker
		// started), its key copied out of the message (setSeenLocked).
		r.raiseGen(r.conns.name, name, storedGen(e.Value()))
		if old != nil {
			// The view stops carrying its generation: remembered.
			if oo := old.opened.Load(); oo != nil && oo.err == nil {
				r.remember(r.conns.name, name, oo.gen)
			}
			r.view.Delete(name)
			r.dropped(old)
		}
		r.setSealedOut(name, nil)
		return &Change{Kind: KindConnection, Name: name, Deleted: true, Initial: initial}
	}
	o := &openedConn{}
	if w, ok := r.takeOwnWrite(name, e.Value()); ok {
		// This worker's own write, met before its put adopted it: applied
		// from the view's copy of what the put sealed, without opening the
		// record again (the generation it wrote is the newest seen for the
		// key, carried by the view's slot, as in adoptConnection).
		o.c, o.err = w.c, w.err
		o.gen = w.gen
	} else {
		o.c, o.gen, o.err = r.decodeConnection(name, e.Value())
	}
	if errors.Is(o.err, ErrRollback) {
		// A replayed old record: keep serving the newer connection seen
		// before (observeGen logged and counted it).
		return nil
	}
	r.replace(name, e.Revision(), old, o)
	return &Change{Kind: KindConnection, Name: name, Initial: initial}
}

// replace puts opened record o, stored at revision rev, into the view in
// place of old (nil: none). The bucket's applyMu is held.
func (r *Registry) replace(name string, rev uint64, old *connSlot, o *openedConn) {
	s := &connSlot{name: name, rev: rev}
	s.opened.Store(o)
	r.opened(name, o)
	if old != nil {
		// Opened by the caller: a record of a higher generation replaced
		// by a lower one (this worker's own write, ordered after it) stays
		// remembered once the view stops carrying it.
		if oo := old.opened.Load(); oo != nil && oo.err == nil && oo.gen > o.gen {
			r.remember(r.conns.name, name, oo.gen)
		}
	}
	r.view.Store(name, s)
	if o.err == nil {
		r.carried(name, o.gen)
	}
	if old != nil {
		r.dropped(old)
	}
}

// adoptConnection puts a connection this worker has just written, sealed at
// generation gen, at revision rev, into the view and notifies the change,
// unless the watcher has applied that revision already: a put's reply means
// this worker's view has it, without waiting for the watcher to bring it
// back. w is the write: the view holds its copy of the connection sealed
// (viewCopy: what decoding the sealed plaintext gives, as the watcher would
// have it). The watcher applies entries in revision order and
// skips those at or below the revision of the view's record, so a later
// write (a delete included) still replaces it, and the write itself is
// notified once.
func (r *Registry) adoptConnection(name string, w *ownWrite, rev uint64) {
	b := r.conns
	b.applyMu.Lock()
	old := r.slot(name)
	if b.lastSeen() >= rev || (old != nil && old.rev >= rev) {
		// Applied (or replaced) by the watcher already.
		b.applyMu.Unlock()
		return
	}
	r.ownMu.Lock()
	c, err, gen := w.c, w.err, w.gen
	r.ownMu.Unlock()
	if err != nil {
		b.applyMu.Unlock()
		return
	}
	if old != nil {
		r.open(old)
	}
	// The generation this worker wrote is the newest seen for the key: the
	// view's slot carries it (seenLocked).
	r.replace(name, rev, old, &openedConn{c: c, gen: gen})
	b.applyMu.Unlock()
	r.notify(Change{Kind: KindConnection, Name: name})
}

// ownWrite is a connection record this worker is writing, from its seal to
// the reply of the write: the watcher, when it meets the record before the
// put adopts it (adoptConnection), applies it from the view's copy of the
// connection sealed in it rather than opening it (takeOwnWrite). A record is
// recognised by its bytes: each seal has a fresh nonce.
type ownWrite struct {
	val []byte
	gen uint64
	// c is the view's copy of the connection sealed (viewCopy), or err
	// why its plaintext would not decode: shared by the view and never
	// changed, not the put's own connection.
	c   events.Connection
	err error
}

// expectOwn registers w, a write of connection name about to be sent; the
// returned func forgets it once the write has replied.
func (r *Registry) expectOwn(name string, w *ownWrite) func() {
	r.ownMu.Lock()
	if r.own == nil {
		r.own = map[string][]*ownWrite{}
	}
	r.own[name] = append(r.own[name], w)
	r.ownMu.Unlock()
	return func() {
		r.ownMu.Lock()
		defer r.ownMu.Unlock()
		ws := r.own[name]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(r.own, name)
		} else {
			r.own[name] = ws
		}
	}
}

// resealedOwn replaces the record of write w, registered by expectOwn, with
// val sealed at gen: the put sealed it again before writing it (over a delete
// marker, above the generation the marker carries).
func (r *Registry) resealedOwn(w *ownWrite, val []byte, gen uint64) {
	r.ownMu.Lock()
	w.val, w.gen = val, gen
	r.ownMu.Unlock()
}

// takeOwnWrite returns (a copy of) the write of connection name under way
// whose record is val, if any.
func (r *Registry) takeOwnWrite(name string, val []byte) (ownWrite, bool) {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	for _, w := range r.own[name] {
		if bytes.Equal(w.val, val) {
			return *w, true
		}
	}
	return ownWrite{}, false
}

// probeConnections runs once the state at start is loaded: it opens records
// until one opens, so that a worker whose master key opens none of them is
// unhealthy (Health) before it takes requests.
func (r *Registry) probeConnections() {
	r.view.Range(func(_, v any) bool {
		return r.open(v.(*connSlot)).err != nil
	})
}

// viewCopy is the view's copy of connection c, whose encoding pt is about
// to be sealed: what decoding pt gives (decodeConnectionJSON), made by
// copying c when copyConnection can (no encoding to decode again, a put's
// largest cost of its own after the seal), else by decoding pt.
func viewCopy(name string, c events.Connection, pt []byte) (events.Connection, error) {
	if out, ok := copyConnection(c); ok {
		return out, nil
	}
	return decodeConnectionJSON(name, pt)
}

func decodeConnectionJSON(name string, pt []byte) (events.Connection, error) {
	var c events.Connection
	if err := json.Unmarshal(pt, &c); err != nil {
		// Not the decoder's text: it can quote a value of the opened
		// (secret-bearing) plaintext, and this error is logged.
		return events.Connection{}, fmt.Errorf("decoding connection %s: malformed opened record (%T)", name, err)
	}
	return c, nil
}

func (r *Registry) decodeConnection(name string, stored []byte) (events.Connection, uint64, error) {
	rec, pt, err := r.openChecked(r.conns.name, name, stored)
	if err != nil {
		return events.Connection{}, 0, err
	}
	c, err := decodeConnectionJSON(name, pt)
	return c, rec.Gen, err
}

// Connection returns a connection from the watched view, with its sensitive
// fields in clear. It is the hot path of every request: it takes no lock
// once the record is open.
func (r *Registry) Connection(name string) (events.Connection, bool) {
	s := r.slot(name)
	if s == nil {
		return events.Connection{}, false
	}
	o := s.opened.Load()
	if o == nil {
		o = r.open(s)
	}
	return o.c, o.err == nil
}

// HasConnection reports whether the watched view holds connection name,
// without opening its record: a sealed slot (loaded at start, not used yet)
// counts; an opened one counts when its record opened. It takes no lock and
// decrypts nothing, for picking a request's lane before its turn.
func (r *Registry) HasConnection(name string) bool {
	s := r.slot(name)
	if s == nil {
		return false
	}
	if o := s.opened.Load(); o != nil {
		return o.err == nil
	}
	return true
}

// LookupConnection reads a connection from the bucket itself, bypassing the
// watched view: for admin requests and to confirm a negative answer.
func (r *Registry) LookupConnection(ctx context.Context, name string) (events.Connection, error) {
	c, _, readErr, err := r.lookupConnection(ctx, name)
	if err != nil {
		return events.Connection{}, err
	}
	if readErr != nil {
		return events.Connection{}, unreadable("connection", name, readErr)
	}
	return c, nil
}

// lookupConnection reads a connection from the bucket: err is the bucket's
// answer (not_found, unavailable), readErr why a stored record cannot be
// opened, gen the stored record's generation (storedGen).
func (r *Registry) lookupConnection(ctx context.Context, name string) (c events.Connection, gen uint64, readErr, err error) {
	e, err := r.conns.kv.Get(ctx, name)
	if err != nil {
		return events.Connection{}, 0, nil, translate(fmt.Sprintf("connection %q", name), err)
	}
	r.settle(name)
	c, _, readErr = r.decodeConnection(name, e.Value())
	return c, storedGen(e.Value()), readErr, nil
}

// unreadable explains a record this worker cannot open, without its content.
func unreadable(what, name string, err error) error {
	return events.Wrap(events.CodeUnavailable, err, "%s %q cannot be read: %s", what, name, unreadableWhy(err))
}

// unreadableWhy explains why a record cannot be opened, from safe parts.
func unreadableWhy(err error) string {
	switch {
	case errors.Is(err, ErrRollback):
		return "its record is older than one this worker has already seen (an old value written back into the bucket); an admin may put or delete it"
	case errors.Is(err, seal.ErrUnknownKey):
		return "it is sealed under a master key this worker does not have (check --master-key-file and --previous-master-key-file)"
	case errors.Is(err, seal.ErrOpen):
		return "its record failed authentication (wrong master key, or tampered)"
	}
	return "its record is corrupt"
}

// Connections lists the watched connections, sorted by name.
func (r *Registry) Connections() []events.Connection {
	var out []events.Connection
	r.view.Range(func(_, v any) bool {
		if o := r.open(v.(*connSlot)); o.err == nil {
			out = append(out, o.c)
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ConnectionsOf lists the watched connections whose provider may is true
// for, sorted by name. A record still sealed (loaded at start, not used yet)
// is opened only when the provider of its public (redacted, unsealed) copy
// passes may: a caller interested in few providers (the rotation consumers:
// providers with change events) does not open every record. The provider of
// an opened record is the sealed one; an unsealed copy altered to name
// another provider only hides the record from such a caller until the record
// is opened, as its first use does.
func (r *Registry) ConnectionsOf(may func(provider string) bool) []events.Connection {
	var out []events.Connection
	r.view.Range(func(_, v any) bool {
		s := v.(*connSlot)
		o := s.opened.Load()
		if o == nil {
			if p, ok := publicProvider(s); ok && !may(p) {
				return true
			}
			o = r.open(s)
		}
		if o.err == nil && may(o.c.Provider) {
			out = append(out, o.c)
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// publicProvider reads the provider of a sealed slot's public copy (ok
// false when the slot was opened meanwhile, or the copy names none).
func publicProvider(s *connSlot) (string, bool) {
	s.mu.Lock()
	raw := s.raw
	s.mu.Unlock()
	if raw == nil {
		return "", false
	}
	if p, ok := quickProvider(raw); ok {
		return p, true
	}
	var rec struct {
		Public struct {
			Provider string `json:"provider"`
		} `json:"public"`
	}
	if json.Unmarshal(raw, &rec) != nil || rec.Public.Provider == "" {
		return "", false
	}
	return rec.Public.Provider, true
}

// quickProvider reads the provider of a record's public copy the way this
// registry writes it ({"v":…,"public":{"name":…,"provider":"x",…},…}),
// without decoding the record: a caller of ConnectionsOf passes over every
// sealed record. ok is false for any other layout (publicProvider then
// decodes it). The public copy is a hint only (see ConnectionsOf).
func quickProvider(raw []byte) (string, bool) {
	_, rest, ok := bytes.Cut(raw, []byte(`,"public":{"name":"`))
	if !ok {
		return "", false
	}
	// A name is a token (events.CheckName): no quote or backslash in it.
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return "", false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(`","provider":"`))
	if !ok {
		return "", false
	}
	j := bytes.IndexByte(rest, '"')
	if j <= 0 || !events.ValidName(string(rest[:j])) {
		return "", false
	}
	return string(rest[:j]), true
}

// PutConnection validates and stores a connection, sealed, through the
// provider table (Options.Providers). Sensitive fields given as
// events.Redacted keep their stored values, unless the put changes a field
// that routes credentials: that is a bad_request.
//
// A put is one round trip to the bucket in the normal case: the connection
// it replaces is the watched view's, written over with compare-and-set on
// its revision (a new one is created). When the view is behind the bucket
// (another worker's write not seen yet), the compare-and-set fails and the
// put reads the bucket and writes again.
func (r *Registry) PutConnection(ctx context.Context, c events.Connection) (events.Connection, error) {
	if err := events.CheckName("name", c.Name); err != nil {
		return events.Connection{}, err
	}
	if s := r.slot(c.Name); s != nil {
		if o := r.open(s); o.err == nil {
			// Keeping redacted fields writes into c's provider block: this
			// attempt works on a copy, in case the bucket must decide.
			if cc, err := cloneConnection(c); err == nil {
				prev := o.c
				out, done, err := r.putConnection(ctx, cc, &prev, o.gen, s.rev)
				if done || err != nil {
					return out, err
				}
			}
		}
	} else {
		out, done, err := r.putConnection(ctx, c, nil, 0, 0)
		if done || err != nil {
			return out, err
		}
	}
	prev, floor, readErr, err := r.lookupConnection(ctx, c.Name)
	var prevp *events.Connection
	switch {
	case err == nil && readErr == nil:
		prevp = &prev
	case err == nil:
		// An unreadable record (wrong key, tampered, replayed) is replaced:
		// nothing of it is kept, so a [redacted] field is refused below.
		r.log.Warn().Str("conn", c.Name).Err(readErr).Msg("replacing an unreadable connection record")
	case errors.Is(err, events.ErrNotFound):
	default:
		return events.Connection{}, err
	}
	out, _, err := r.putConnection(ctx, c, prevp, floor, ^uint64(0))
	return out, err
}

// cloneConnection is a deep copy of c, as its round trip through JSON makes
// it: copyConnection, or the round trip itself when that declines.
func cloneConnection(c events.Connection) (events.Connection, error) {
	// json.Marshal escapes HTML in a service account key (a raw message),
	// which copyConnection does not: such a key takes the round trip.
	if c.GCP == nil || len(c.GCP.ServiceAccountKey) == 0 {
		if out, ok := copyConnection(c); ok {
			return out, nil
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return events.Connection{}, err
	}
	var out events.Connection
	err = json.Unmarshal(b, &out)
	return out, err
}

// putConnection checks c against prev (nil: none) and writes it: at
// expected revision rev (0: create; ^0: whatever is stored). done is false
// when the compare-and-set found another revision (nothing was written).
func (r *Registry) putConnection(ctx context.Context, c events.Connection, prevp *events.Connection, floor, rev uint64) (events.Connection, bool, error) {
	c.Normalize()
	if err := r.opts.Providers.Validate(&c); err != nil {
		return events.Connection{}, true, err
	}
	if err := r.opts.Providers.KeepRedacted(&c, prevp); err != nil {
		if rev != ^uint64(0) {
			// Judged against a view that may be behind: the bucket decides.
			return events.Connection{}, false, nil
		}
		return events.Connection{}, true, err
	}
	if prevp != nil && prevp.Provider != c.Provider {
		if used := r.exportsUsing(c.Name); len(used) > 0 {
			return events.Connection{}, true, events.Errorf(events.CodeBadRequest,
				"provider: connection %q is used by export %q; changing its provider would break it", c.Name, used[0])
		}
	}
	// &c: c is on the heap already (moved there); c itself would be
	// copied to the heap once more to make the interface value.
	pt, err := events.Marshal(&c)
	if err != nil {
		return events.Connection{}, true, fmt.Errorf("encoding connection: %w", err)
	}
	val, gen, err := r.sealValueGen(r.conns.name, c.Name, floor, pt, r.opts.Providers.Redact(c), 0)
	if err != nil {
		return events.Connection{}, true, err
	}
	var stored uint64
	// Forgotten once the write has replied: the watcher meeting the record
	// before then applies it without opening it.
	own := &ownWrite{val: val, gen: gen}
	own.c, own.err = viewCopy(c.Name, c, pt)
	defer r.expectOwn(c.Name, own)()
	switch rev {
	case 0:
		var exists bool
		stored, exists, _, err = r.createKey(ctx, r.conns, c.Name, val, func(floor uint64) ([]byte, error) {
			// Over a delete marker: above the generation it carries. The
			// record written is this one: the watcher knows it by these bytes.
			val, gen, err = r.sealValueGen(r.conns.name, c.Name, floor, pt, r.opts.Providers.Redact(c), 0)
			if err == nil {
				r.resealedOwn(own, val, gen)
			}
			return val, err
		})
		if err == nil && exists {
			err = jetstream.ErrKeyExists
		}
	case ^uint64(0):
		stored, err = r.conns.kv.Put(ctx, c.Name, val)
	default:
		stored, err = r.update(ctx, r.conns, c.Name, val, rev)
	}
	if err != nil {
		if rev != ^uint64(0) && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
			return events.Connection{}, false, nil
		}
		return events.Connection{}, true, translate("storing connection", err)
	}
	if prevp != nil && prevp.Provider == events.ProviderBuiltin && c.Provider != events.ProviderBuiltin {
		if err := r.deleteSecretsOf(ctx, c.Name); err != nil {
			return events.Connection{}, true, err
		}
	}
	r.adoptConnection(c.Name, own, stored)
	return c, true, nil
}

// DeleteConnection removes a connection and its built-in secrets, even one
// whose record cannot be opened. A connection used by an export cannot be
// deleted.
func (r *Registry) DeleteConnection(ctx context.Context, name string) error {
	// Read as the put's check reads (from the leader of a replicated
	// stream): a connection just put through another worker is found.
	val, rev, err := r.checkedRead(ctx, r.conns, name)
	if err != nil {
		return translate(fmt.Sprintf("connection %q", name), err)
	}
	if used := r.exportsUsing(name); len(used) > 0 {
		return events.Errorf(events.CodeBadRequest, "connection %q is used by export %q; delete the export first", name, used[0])
	}
	// The view's record is opened first, so the marker lands above the
	// generation it carries (nextGen).
	r.settle(name)
	if err := r.deleteKey(ctx, r.conns, name, storedGen(val), rev); err != nil {
		return translate("deleting connection", err)
	}
	if err := r.deleteSecretsOf(ctx, name); err != nil {
		return err
	}
	r.conns.waitLatest(ctx)
	return nil
}
