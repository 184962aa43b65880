package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/pause"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func secretKey(conn, name string) string { return conn + "." + name }

func (r *Registry) applySecret(e jetstream.KeyValueEntry) *Change {
	conn, name, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return nil
	}
	return &Change{Kind: KindSecret, Conn: conn, Name: name, Deleted: isDelete(e)}
}

// secretApplied follows a secret's change once applied, before it is
// notified: a worker that read the secret remembers the generation its
// delete marker carries (purge), above the deleted record's, so that record
// written back is refused. One that never read it keeps no entry for it. The
// watch brings no values (MetaOnly): the marker is read by its revision, gone
// when the key was written since (sealed above the marker). The read (up to
// 2 s when JetStream does not answer) is made off the watcher's goroutine
// (markerQueue), so the changes of other secrets do not wait for it; the
// delete is notified once its marker is read, and a later change of the same
// secret after it. True when the change was queued.
func (r *Registry) secretApplied(e jetstream.KeyValueEntry, c *Change) bool {
	read := isDelete(e) && r.seenGenOf(r.secrets.name, e.Key()) > 0
	return r.markers.add(r.watchCtx, markerItem{key: e.Key(), rev: e.Revision(), read: read, c: c})
}

// markerQueueSize bounds the secret changes waiting for delete markers to
// be read: past it the watcher waits for room (as it waited for every read
// before), so nothing is dropped.
const markerQueueSize = 1024

// markerQueue holds the secret changes waiting, in watch order, for a delete
// marker to be read (readMarkers): a marker to read, or a change of a secret
// with an earlier change still queued, which must not be notified before it.
type markerQueue struct {
	ch      chan markerItem
	mu      sync.Mutex
	pending map[string]int // secret key → its changes queued
}

// markerItem is a queued change (c, nil when there is none to notify) of
// secret key at revision rev; read says its delete marker is to be read.
type markerItem struct {
	key  string
	rev  uint64
	read bool
	c    *Change
}

func newMarkerQueue(size int) *markerQueue {
	return &markerQueue{ch: make(chan markerItem, size), pending: map[string]int{}}
}

// add queues it when it has a marker to read or its key has changes queued
// (false: nothing to wait for, the caller notifies the change at once). A
// full queue makes add wait until there is room or ctx is done (stopping).
func (q *markerQueue) add(ctx context.Context, it markerItem) bool {
	q.mu.Lock()
	if !it.read && (it.c == nil || q.pending[it.key] == 0) {
		q.mu.Unlock()
		return false
	}
	it.key = strings.Clone(it.key)
	q.pending[it.key]++
	q.mu.Unlock()
	select {
	case q.ch <- it:
	case <-ctx.Done():
	}
	return true
}

// done accounts for a queued change of key handled.
func (q *markerQueue) done(key string) {
	q.mu.Lock()
	if q.pending[key]--; q.pending[key] <= 0 {
		delete(q.pending, key)
	}
	q.mu.Unlock()
}

// readMarkers reads the queued delete markers and notifies the queued
// changes, in order, until ctx is done (Stop).
func (r *Registry) readMarkers(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-r.markers.ch:
			if it.read {
				r.markerGen(it.key, it.rev)
			}
			if it.c != nil && ctx.Err() == nil {
				r.notify(*it.c)
			}
			r.markers.done(it.key)
		}
	}
}

// StoredSecret is a built-in secret's value its version (1 for the first
// put of the secret, then 2, 3…) and the bucket's revision (the type the
// builtin provider reads through provider.SecretStore).
type StoredSecret = provider.StoredSecret

// PutSecret stores a built-in secret of a builtin connection, sealed. The
// caller acts on the change on this worker (invalidates its cache entry):
// the watcher does not notify this worker's listeners of the write again.
//
// A put is one round trip to the bucket when the secret is new: the
// connection is checked in the watched view (the bucket confirms a negative
// answer), and version 1 is created. Over an existing secret, three: the
// create fails, the stored record is read, and the next version updates it
// with compare-and-set (a concurrent put makes it read again). Over a
// deleted one, three as well: the create fails, the delete marker is read,
// and the secret is written over it above the generation it carries. Each
// then reads the connection again (keptFor), so that a put racing the
// connection's delete leaves no secret behind.
func (r *Registry) PutSecret(ctx context.Context, conn, name string, value []byte) error {
	checked, err := r.requireBuiltin(ctx, conn)
	if err != nil {
		return err
	}
	if r.fault != nil && r.fault.SecretChecked != nil {
		r.fault.SecretChecked()
	}
	key := secretKey(conn, name)
	// Each put is the next version of this secret: create version 1, or
	// update the entry read.
	var version, prev, floor uint64 = 1, 0, 0
	for attempt := 0; ; attempt++ {
		val, err := r.sealValue(r.secrets.name, key, floor, value, nil, version)
		if err != nil {
			return err
		}
		var rev uint64
		if prev == 0 {
			var exists bool
			var m *jetstream.RawStreamMsg
			rev, exists, m, err = r.createKey(ctx, r.secrets, key, val, func(floor uint64) ([]byte, error) {
				// Over a delete marker: above the generation it carries.
				return r.sealValue(r.secrets.name, key, floor, value, nil, version)
			})
			if err == nil && exists && m != nil && attempt < 10 {
				// The stored record, read by createKey: the next version
				// over it, without reading it again.
				version, prev, floor = secretVersion(m.Data)+1, m.Sequence, storedGen(m.Data)
				continue
			}
			if err == nil && exists {
				err = jetstream.ErrKeyExists
			}
		} else {
			rev, err = r.secrets.kv.Update(ctx, key, val, prev)
		}
		if err == nil {
			// The caller invalidates this worker's cache before it replies
			// (admin): the watcher's notification would only come later.
			r.secrets.wroteOwn(rev)
			if r.fault != nil && r.fault.SecretWritten != nil {
				r.fault.SecretWritten()
			}
			return r.keptFor(ctx, conn, key, checked, rev)
		}
		if attempt >= 10 || !(errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) || ctx.Err() != nil {
			return translate("storing secret", err)
		}
		if attempt > 0 && !conflictPause(ctx, attempt) {
			return translate("storing secret", ctx.Err())
		}
		e, err := r.secrets.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			version, prev, floor = 1, 0, 0
		case err != nil:
			return translate("storing secret", err)
		default:
			version, prev, floor = secretVersion(e.Value())+1, e.Revision(), storedGen(e.Value())
		}
	}
}

// secretVersion reads the version of a stored secret record (1 for records
// written before versions were counted).
func secretVersion(stored []byte) uint64 {
	var rec sealedRecord
	if json.Unmarshal(stored, &rec) != nil || rec.Version == 0 {
		return 1
	}
	return rec.Version
}

// markerGen raises the generation remembered for secret key to the one its
// delete marker, stored at revision rev, carries.
func (r *Registry) markerGen(key string, rev uint64) {
	ctx := r.watchCtx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := r.streamOf(ctx, r.secrets)
	if err != nil {
		r.log.Warn().Err(err).Str("key", key).Msg("reading a secret's delete marker")
		return
	}
	m, err := st.GetMsg(ctx, rev)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return
	case err != nil:
		r.log.Warn().Err(err).Str("key", key).Msg("reading a secret's delete marker")
		return
	}
	if m.Subject == kvSubject(r.secrets, key) {
		r.raiseSeen(r.secrets.name, key, storedGen(m.Data))
	}
}

// conflictPause waits a random while, growing with attempt, before a write
// that lost a compare-and-set tries again, so concurrent writers of one key
// do not keep colliding (a replicated stream refuses every write of a key
// while one is being replicated: 10164): false when ctx ended first.
func conflictPause(ctx context.Context, attempt int) bool {
	return pause.For(ctx, time.Duration(rand.Int64N(int64(attempt)*int64(2*time.Millisecond))))
}

// isWrongSequence reports a compare-and-set conflict: the key's last
// revision is not the one expected. A single-replica stream answers 10071;
// a replicated (R>1) one answers 10164 while another write of the key is
// still being replicated, which KeyValue.Update wraps as
// ErrKeyRevisionMismatch and which ErrKeyExists does not match.
func isWrongSequence(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Secret reads a built-in secret straight from the bucket.
func (r *Registry) Secret(ctx context.Context, conn, name string) (StoredSecret, error) {
	e, err := r.secrets.kv.Get(ctx, secretKey(conn, name))
	if err != nil {
		return StoredSecret{}, translate(fmt.Sprintf("secret %q", name), err)
	}
	_, pt, err := r.openChecked(r.secrets.name, e.Key(), e.Value())
	if err != nil {
		return StoredSecret{}, unreadable("secret", name, err)
	}
	return StoredSecret{Value: pt, Version: secretVersion(e.Value()), Revision: e.Revision()}, nil
}

// SecretNames lists the names of a connection's built-in secrets, sorted.
func (r *Registry) SecretNames(ctx context.Context, conn string) ([]string, error) {
	if _, err := r.LookupConnection(ctx, conn); err != nil {
		return nil, err
	}
	return r.secretNames(ctx, conn)
}

func (r *Registry) secretNames(ctx context.Context, conn string) ([]string, error) {
	lister, err := r.secrets.kv.ListKeysFiltered(ctx, conn+".>")
	if err != nil {
		return nil, translate("listing secrets", err)
	}
	names := []string{}
	for k := range lister.Keys() {
		names = append(names, strings.TrimPrefix(k, conn+"."))
	}
	sort.Strings(names)
	return names, nil
}

// DeleteSecret removes a built-in secret, even one whose record (or whose
// connection's record) cannot be opened.
func (r *Registry) DeleteSecret(ctx context.Context, conn, name string) error {
	if _, _, _, err := r.lookupConnection(ctx, conn); err != nil {
		return err
	}
	key := secretKey(conn, name)
	// Read from the leader of a replicated stream (checkedRead): a secret
	// just put through another worker is found.
	val, rev, err := r.checkedRead(ctx, r.secrets, key)
	if err != nil {
		return translate(fmt.Sprintf("secret %q", name), err)
	}
	if err := r.deleteKey(ctx, r.secrets, key, storedGen(val), rev); err != nil {
		return translate("deleting secret", err)
	}
	return nil
}

// deleteSecretsOf removes the built-in secrets of connection conn, once its
// record was deleted (or changed to another provider). Each secret is the
// record read by storedSecrets: its marker carries the record's generation
// (purge).
func (r *Registry) deleteSecretsOf(ctx context.Context, conn string) error {
	stored, err := r.storedSecrets(ctx, conn)
	if err != nil {
		return translate("listing secrets of connection", err)
	}
	for key, s := range stored {
		if err := r.deleteKey(ctx, r.secrets, key, storedGen(s.val), s.rev); err != nil {
			return translate("deleting secrets of connection", err)
		}
	}
	return nil
}

// storedSecret is a secret record read from the bucket: its value and
// revision.
type storedSecret struct {
	val []byte
	rev uint64
}

// storedSecrets reads the secret records of connection conn (delete markers
// left out), by key, as keptFor reads (checkedGet): from the stream's leader
// on a replicated bucket, so that every secret whose put was acknowledged
// before is found. A connection's delete relies on it (keptFor): a listing
// through a consumer (KeyValue.ListKeys) may run on a follower that has not
// applied that put yet, and would leave its secret behind. One read per key
// (the bucket keeps one record per key); a key written again while the
// records are read is read again, and its last record kept.
func (r *Registry) storedSecrets(ctx context.Context, conn string) (map[string]storedSecret, error) {
	filter := kvSubject(r.secrets, conn+".>")
	prefix := kvSubject(r.secrets, "")
	last := map[string]storedSecret{}
	for seq := uint64(1); ; {
		m, err := r.checkedGet(ctx, r.secrets, msgGet{Seq: seq, NextFor: filter})
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return last, nil
		case err != nil:
			return nil, err
		case m.Sequence < seq || !strings.HasPrefix(m.Subject, prefix):
			return nil, fmt.Errorf("reading secrets: the stream answered message %d on %q for a read from %d", m.Sequence, m.Subject, seq)
		}
		seq = m.Sequence + 1
		key := strings.TrimPrefix(m.Subject, prefix)
		if op := m.Header.Get(kvOperation); op == kvPurge || op == kvDelete {
			delete(last, key)
			continue
		}
		last[key] = storedSecret{val: m.Data, rev: m.Sequence}
	}
}

// requireBuiltin checks that conn is a builtin connection: in the watched
// view, else in the bucket. checked is the revision of the record that
// answered when the view did (0: the bucket did).
func (r *Registry) requireBuiltin(ctx context.Context, conn string) (checked uint64, err error) {
	if s := r.slot(conn); s != nil {
		if o := r.open(s); o.err == nil && o.c.Provider == events.ProviderBuiltin {
			return s.rev, nil
		}
	}
	// The view may be behind: the bucket confirms the answer.
	c, err := r.LookupConnection(ctx, conn)
	if err != nil {
		return 0, err
	}
	if c.Provider != events.ProviderBuiltin {
		return 0, notBuiltin(conn, c.Provider)
	}
	return 0, nil
}

func notBuiltin(conn, provider string) error {
	return events.Errorf(events.CodeBadRequest,
		"connection: %q has provider %s; the built-in store holds secrets of builtin connections only", conn, provider)
}

// keptForTimeout bounds keptFor's read of the connection from the bucket
// and its cleanup (and a read of the connections bucket's last revision).
const keptForTimeout = 2 * time.Second

// keptForViewBudget bounds keptFor's check from the view: the read of the
// connections bucket's last revision and the wait for the view to apply it.
const keptForViewBudget = time.Second

// keptForViewWait bounds keptFor's wait for the watched view to apply the
// connections bucket's last revision; past it, the bucket is read.
const keptForViewWait = 500 * time.Millisecond

// keptFor checks, once the put has written secret key (at revision rev),
// that its connection is still there and builtin, so that a put racing the
// connection's delete (or its change to another provider, through any
// worker) leaves no secret behind: that delete (or change) removes the
// connection's secrets after it wrote the connection, so either its listing
// finds this secret, or a read of the connections made after the write
// finds the connection gone (or no longer builtin), and the put removes what
// it wrote and fails as the check before it would have.
//
// That read is, in the normal case, the watched view once it has applied
// the connections bucket's last revision read after the write
// (keptInView): the read of that revision is shared by the puts under way
// (lastRevision), so a put costs no round trip of its own. When the view
// cannot decide (the revision unread, the watcher not there within
// keptForViewWait), the connection is read from the bucket (keptInBucket).
// checked is the revision of the connection's record the put checked (0:
// none known): that record still there is the common case, decided without
// opening it.
func (r *Registry) keptFor(ctx context.Context, conn, key string, checked, rev uint64) error {
	// The secret is stored: what follows must not fail for want of time
	// the request spent on its write (a cleanup cut short would leave the
	// very orphan it is for), so it runs on deadlines of its own: the
	// view's check within keptForViewBudget (it makes no timer in the
	// common case), then the bucket's read and the removal within
	// keptForTimeout, whatever time the view's check took.
	refusal, decided := r.keptInView(context.WithoutCancel(ctx), time.Now().Add(keptForViewBudget), conn, checked)
	if decided && refusal == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keptForTimeout)
	defer cancel()
	if !decided {
		if refusal, decided = r.keptInBucket(ctx, conn, key, checked); !decided {
			return nil
		}
	}
	if refusal == nil {
		return nil
	}
	if err := r.removeOrphan(ctx, key, rev); err != nil {
		r.log.Error().Err(err).Str("key", key).Msg("removing a secret stored for a connection deleted meanwhile")
	}
	return refusal
}

// removeOrphan purges secret key, stored at revision rev for a connection
// deleted meanwhile, while it is still the record written there: a later
// write of the key is that put's to answer for. A conflict on the purge is
// not such a write when the key's last record is still rev: a replicated
// stream refuses a write of a key while another is being replicated
// (10164), the put's own just acknowledged among them, so the purge is tried
// again on a fresh read rather than leaving the orphan.
func (r *Registry) removeOrphan(ctx context.Context, key string, rev uint64) error {
	for attempt := 1; ; attempt++ {
		val, stored, err := r.checkedRead(ctx, r.secrets, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return nil
		case err != nil:
			return err
		case stored != rev:
			return nil
		}
		if r.fault != nil && r.fault.OrphanPurge != nil {
			err = r.fault.OrphanPurge()
		}
		if err == nil {
			err = r.purge(ctx, r.secrets, key, storedGen(val), rev)
		}
		if err == nil || !isWrongSequence(err) {
			return err
		}
		if attempt >= 10 || !conflictPause(ctx, attempt) {
			return err
		}
	}
}

// keptInView decides keptFor from the watched view once it has applied the
// connections bucket's last revision, read after the secret's write (by
// deadline at the latest): a
// delete of the connection stored before that write is at or below it. The
// refusal is nil when the connection is there and builtin (or unreadable:
// nothing tells it is not); decided is false when the view could not be
// brought that far.
func (r *Registry) keptInView(ctx context.Context, deadline time.Time, conn string, checked uint64) (refusal error, decided bool) {
	read := r.lastConnsRevision
	if r.fault != nil && r.fault.LastRevision != nil {
		read = r.fault.LastRevision
	}
	last, err := r.conns.lastRevision(ctx, deadline, read)
	if err != nil {
		return nil, false
	}
	if r.conns.lastSeen() < last {
		wait := min(keptForViewWait, time.Until(deadline))
		wctx, cancel := context.WithTimeout(ctx, wait)
		seen := r.conns.waitSeen(wctx, last)
		cancel()
		if !seen {
			return nil, false
		}
	}
	s := r.slot(conn)
	switch {
	case s == nil:
		return translate(fmt.Sprintf("connection %q", conn), jetstream.ErrKeyNotFound), true
	case checked != 0 && s.rev == checked:
		return nil, true
	}
	if o := r.open(s); o.err == nil && o.c.Provider != events.ProviderBuiltin {
		return notBuiltin(conn, o.c.Provider), true
	}
	return nil, true
}

// lastConnsRevision reads a revision of the connections bucket at or above
// every write it holds: the last one its watcher has applied when the bucket
// holds nothing after it, which one get of the next message tells (the
// common case: the server looks up one sequence, no stream info to build),
// else the stream's last sequence. Both are read from the stream's leader
// when it is replicated (checkedGet; a stream's info is the leader's).
//
// (A get of the last message of any key, `$KV.<bucket>.>`, would read the
// last sequence in one request whatever the view, but the server matches
// that wildcard against every key the stream holds.)
func (r *Registry) lastConnsRevision(ctx context.Context) (uint64, error) {
	b := r.conns
	seen := b.lastSeen()
	_, err := r.checkedGet(ctx, b, msgGet{Seq: seen + 1, NextFor: kvSubject(b, ">")})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return seen, nil
	case err != nil:
		return 0, err
	}
	return b.lastSeq(ctx)
}

// keptInBucket decides keptFor from the connection read from the bucket;
// decided is false when that read failed: stored, and nothing tells its
// connection is gone, the put succeeded (a delete of the connection sweeps
// its secrets after it; reporting a failure would leave the stored value
// unannounced).
func (r *Registry) keptInBucket(ctx context.Context, conn, key string, checked uint64) (refusal error, decided bool) {
	var val []byte
	var rev uint64
	var err error
	if r.fault != nil && r.fault.ConnReread != nil {
		err = r.fault.ConnReread(ctx)
	}
	if err == nil {
		val, rev, err = r.checkedRead(ctx, r.conns, conn)
	}
	switch {
	case err == nil && checked != 0 && rev == checked:
		return nil, true
	case err == nil:
		r.settle(conn)
		c, _, readErr := r.decodeConnection(conn, val)
		if readErr != nil || c.Provider == events.ProviderBuiltin {
			// Builtin, or unreadable: nothing tells it is not.
			return nil, true
		}
		return notBuiltin(conn, c.Provider), true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return translate(fmt.Sprintf("connection %q", conn), err), true
	}
	r.log.Warn().Err(err).Str("conn", conn).Str("key", key).Msg("secret stored; reading its connection again failed")
	return nil, false
}
