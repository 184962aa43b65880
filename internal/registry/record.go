package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// ErrRollback means a sealed record's generation is older than one this
// worker has already seen for the same key: an old value written back into
// the bucket (a replay), refused.
var ErrRollback = errors.New("record is older than one already seen for its key (replayed)")

// sealedRecord is how a sealed value is stored: the envelope, and for
// connections a redacted copy so operators can read the bucket.
//
// V 2 records carry a generation that only grows with each write of the key;
// it is part of the envelope's associated data, so it cannot be changed
// without the envelope failing authentication. V 1 records (written before
// generations) read as generation 0.
type sealedRecord struct {
	V      int             `json:"v"`
	Gen    uint64          `json:"gen,omitempty"`
	Public json.RawMessage `json:"public,omitempty"`
	// Version counts the puts of a built-in secret: 1, 2, 3…
	Version uint64        `json:"version,omitempty"`
	Sealed  seal.Envelope `json:"sealed"`
}

// associatedData binds a ciphertext to its bucket, key and generation.
// It is built in one allocation (every seal and open makes one).
func associatedData(bucket, key string, v int, gen uint64) []byte {
	const prefix, genPart = "cloudbridge/v1/", "/gen/"
	ad := make([]byte, 0, len(prefix)+len(bucket)+1+len(key)+len(genPart)+20)
	ad = append(ad, prefix...)
	ad = append(ad, bucket...)
	ad = append(ad, '/')
	ad = append(ad, key...)
	if v >= 2 {
		ad = append(ad, genPart...)
		ad = strconv.AppendUint(ad, gen, 10)
	}
	return ad
}

// genKey names a record for seenGen (bucket is one of the registry's
// bucket names, key shares the record's key string).
type genKey struct{ bucket, key string }

// nextGen is the generation of a new write of bucket/key: above floor (the
// stored record's, or after a delete the one its purge marker carries:
// purge), above every generation this worker has seen for it, and at least
// the current time in nanoseconds, so a write by a worker that never saw the
// key lands above the records other workers remember. The floor carries the
// generation across a delete, so no worker's clock decides whether a key
// deleted and written again is refused as a rollback by the workers that
// remember it: only a marker left without one (by another client, or before
// markers carried one) makes the clock the floor again.
func (r *Registry) nextGen(bucket, key string, floor uint64) uint64 {
	gen := uint64(r.now().UnixNano())
	if floor >= gen {
		gen = floor + 1
	}
	r.genMu.Lock()
	if seen := r.seenLocked(genKey{bucket, key}); seen >= gen {
		gen = seen + 1
	}
	r.genMu.Unlock()
	return gen
}

// seenGenOf is the highest generation this worker has seen for bucket/key.
func (r *Registry) seenGenOf(bucket, key string) uint64 {
	r.genMu.Lock()
	defer r.genMu.Unlock()
	return r.seenLocked(genKey{bucket, key})
}

// seenLocked is the highest generation seen for k (genMu held): the one
// seenGen remembers, or for a connection in the view the generation of its
// opened record, which seenGen does not repeat (the slot carries it: one
// map entry less per connection). Every comparison of a connection's
// generation opens its slot first (open), so a sealed slot is never the
// newest.
func (r *Registry) seenLocked(k genKey) uint64 {
	seen := r.seenGen[k]
	if k.bucket == r.conns.name {
		if s := r.slot(k.key); s != nil {
			if o := s.opened.Load(); o != nil && o.err == nil && o.gen > seen {
				seen = o.gen
			}
		}
	}
	return seen
}

// remember keeps gen as seen for bucket/key in seenGen itself: for a
// connection's record leaving the view (deleted, or replaced by one of a
// lower generation), which stops carrying it.
func (r *Registry) remember(bucket, key string, gen uint64) {
	k := genKey{bucket, key}
	r.genMu.Lock()
	if gen > r.seenGen[k] {
		r.setSeenLocked(k, gen)
	}
	r.genMu.Unlock()
}

// carried drops what seenGen holds for connection name when the view's
// record, at generation gen, carries as much.
func (r *Registry) carried(name string, gen uint64) {
	k := genKey{r.conns.name, name}
	r.genMu.Lock()
	if v, ok := r.seenGen[k]; ok && v <= gen {
		delete(r.seenGen, k)
	}
	r.genMu.Unlock()
}

// maxGenAhead bounds how far past the clock a stored generation may push
// the next one: a record's gen field is only authenticated once opened, so
// a forged huge value is ignored rather than followed.
const maxGenAhead = uint64(365 * 24 * time.Hour)

// storedGen is the generation of the record stored under key in b (0 when
// none, or when it is not plausible), read from the bucket.
func storedGen(raw []byte) uint64 {
	var rec struct {
		Gen uint64 `json:"gen"`
	}
	if json.Unmarshal(raw, &rec) != nil || rec.Gen > uint64(time.Now().UnixNano())+maxGenAhead {
		return 0
	}
	return rec.Gen
}

// observeGen records that bucket/key was read at gen, or refuses it as a
// rollback when a newer generation was seen before. A generation already
// remembered, or carried by the view's record of the connection
// (seenLocked), adds no entry to seenGen: reading the connections of the
// view (lookups, rekey) costs no memory.
func (r *Registry) observeGen(bucket, key string, gen uint64) error {
	k := genKey{bucket, key}
	r.genMu.Lock()
	defer r.genMu.Unlock()
	seen := r.seenLocked(k)
	if gen < seen {
		metrics.RegistryRollbackRefused.WithLabelValues(bucket).Inc()
		r.log.Error().Str("bucket", bucket).Str("key", key).Uint64("gen", gen).Uint64("seen_gen", seen).
			Msg("refusing a sealed record older than one already seen for its key (rolled back or replayed)")
		return ErrRollback
	}
	if gen > seen {
		r.setSeenLocked(k, gen)
	}
	return nil
}

// setSeenLocked remembers gen for k (genMu held), a new entry's key copied
// out of the string it came in (a watched entry's key is a slice of its
// message's subject).
func (r *Registry) setSeenLocked(k genKey, gen uint64) {
	if _, ok := r.seenGen[k]; !ok {
		k.key = strings.Clone(k.key)
	}
	r.seenGen[k] = gen
}

// raiseGen records that bucket/key was read at gen without refusing an
// older one: for a record loaded at start and opened later (connSlot), which
// was the first record of its key this worker saw, so a generation seen since
// can only be a newer state of the bucket.
func (r *Registry) raiseGen(bucket, key string, gen uint64) {
	k := genKey{bucket, key}
	r.genMu.Lock()
	if gen > r.seenLocked(k) {
		r.setSeenLocked(k, gen)
	}
	r.genMu.Unlock()
}

// raiseSeen raises what seenGen remembers for bucket/key to gen, only when
// it remembers the key already (it read a record of it).
func (r *Registry) raiseSeen(bucket, key string, gen uint64) {
	k := genKey{bucket, key}
	r.genMu.Lock()
	if v, ok := r.seenGen[k]; ok && gen > v {
		r.seenGen[k] = gen
	}
	r.genMu.Unlock()
}

// sealValue seals a new write of bucket/key at the next generation above
// floor (the generation of the record it replaces, storedGen).
// version, when not 0, is the built-in secret's version.
func (r *Registry) sealValue(bucket, key string, floor uint64, plaintext []byte, public any, version uint64) ([]byte, error) {
	val, _, err := r.sealValueGen(bucket, key, floor, plaintext, public, version)
	return val, err
}

// sealValueGen is sealValue, also returning the generation sealed.
func (r *Registry) sealValueGen(bucket, key string, floor uint64, plaintext []byte, public any, version uint64) ([]byte, uint64, error) {
	gen := r.nextGen(bucket, key, floor)
	env, err := r.sealer.Seal(plaintext, associatedData(bucket, key, 2, gen))
	if err != nil {
		return nil, 0, fmt.Errorf("sealing %s/%s: %w", bucket, key, err)
	}
	rec := sealedRecord{V: 2, Gen: gen, Version: version, Sealed: env}
	if public != nil {
		if rec.Public, err = json.Marshal(public); err != nil {
			return nil, 0, fmt.Errorf("encoding %s/%s: %w", bucket, key, err)
		}
	}
	val, err := encodeRecord(rec)
	return val, gen, err
}

// openChecked opens a stored record read from the bucket (not one loaded at
// start: connSlot), refusing one older than a generation already seen for
// its key (ErrRollback), and records its generation as seen.
func (r *Registry) openChecked(bucket, key string, stored []byte) (sealedRecord, []byte, error) {
	rec, pt, err := r.openRecord(bucket, key, stored)
	if err != nil {
		return rec, nil, err
	}
	if err := r.observeGen(bucket, key, rec.Gen); err != nil {
		return rec, nil, fmt.Errorf("opening record %s/%s: %w", bucket, key, err)
	}
	return rec, pt, nil
}

// openRecord decodes and opens a stored record.
func (r *Registry) openRecord(bucket, key string, stored []byte) (sealedRecord, []byte, error) {
	var rec sealedRecord
	if err := json.Unmarshal(stored, &rec); err != nil {
		return rec, nil, fmt.Errorf("decoding record %s/%s: %w", bucket, key, err)
	}
	if rec.V != 1 && rec.V != 2 {
		return rec, nil, fmt.Errorf("record %s/%s: unknown version %d", bucket, key, rec.V)
	}
	if rec.V == 1 {
		rec.Gen = 0
	}
	pt, err := r.sealer.Open(rec.Sealed, associatedData(bucket, key, rec.V, rec.Gen))
	if err != nil {
		return rec, nil, fmt.Errorf("opening record %s/%s: %w", bucket, key, err)
	}
	return rec, pt, nil
}

// The KV purge marker's headers (ADR-8: the KV-Operation header, and a
// subject rollup that removes the key's earlier records).
const (
	kvOperation = "KV-Operation"
	kvPurge     = "PURGE"
	kvDelete    = "DEL"
)

// kvSubject is the subject of key in bucket b.
func kvSubject(b *bucket, key string) string { return "$KV." + b.name + "." + key }

// purge removes key from b as KeyValue.Purge does, with a marker that carries
// a generation strictly above gen (the generation of the record it removes)
// and above every one this worker has seen for the key (nextGen): a later
// write of the key by any worker reads it as its floor (createKey), so it
// lands above the generation the workers that saw the record remember; and
// the workers that learn of the marker remember its generation, so the
// deleted record itself, written back into the bucket, is refused as a
// rollback (a generation equal to one seen is the same record read again,
// accepted).
//
// The marker is written with compare-and-set on rev, the revision of the
// record whose generation gen is: a write of the key between the read and
// the delete makes it fail (isWrongSequence) rather than carry a generation
// below that write's.
func (r *Registry) purge(ctx context.Context, b *bucket, key string, gen, rev uint64) error {
	if !validKey(key) {
		return jetstream.ErrInvalidKey
	}
	m := nats.NewMsg(kvSubject(b, key))
	m.Header.Set(kvOperation, kvPurge)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	gen = r.nextGen(b.name, key, gen)
	m.Data = []byte(`{"gen":` + strconv.FormatUint(gen, 10) + `}`)
	if _, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev)); err != nil {
		return err
	}
	r.remember(b.name, key, gen)
	return nil
}

// deleteKey purges key from b (purge), the record stored at revision rev
// with generation gen read before; when the key was written since, it reads
// it again and deletes what it finds (nothing when the key is gone).
func (r *Registry) deleteKey(ctx context.Context, b *bucket, key string, gen, rev uint64) error {
	for attempt := 1; ; attempt++ {
		err := r.purge(ctx, b, key, gen, rev)
		if err == nil || !isWrongSequence(err) || attempt >= 10 {
			return err
		}
		if !conflictPause(ctx, attempt) {
			return ctx.Err()
		}
		// Read as keptFor reads (checkedRead: from the leader of a
		// replicated stream): a follower behind it could answer that the
		// key holds nothing yet, and leave the record it missed.
		val, stored, err := r.checkedRead(ctx, b, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil
		}
		if err != nil {
			return err
		}
		gen, rev = storedGen(val), stored
	}
}

// validKey is KeyValue's rule for a key: the characters -/_=.a-zA-Z0-9,
// neither starting nor ending with a dot.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-/_=.", c) >= 0) {
			return false
		}
	}
	return true
}

// createKey creates key in b with val, written for floor 0; when the key
// holds a delete marker, it writes seal(floor) over it instead, floor being
// the generation the marker carries (purge). A key that holds a record is
// not written: exists is true, with the record read when it was (nil when
// a concurrent write got in the way).
func (r *Registry) createKey(ctx context.Context, b *bucket, key string, val []byte, seal func(floor uint64) ([]byte, error)) (rev uint64, exists bool, stored *jetstream.RawStreamMsg, err error) {
	rev, err = r.update(ctx, b, key, val, 0)
	if err == nil || !(errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
		return rev, false, nil, err
	}
	stream, serr := r.streamOf(ctx, b)
	if serr != nil {
		return 0, false, nil, serr
	}
	m, gerr := stream.GetLastMsgForSubject(ctx, kvSubject(b, key))
	switch {
	case errors.Is(gerr, jetstream.ErrMsgNotFound):
		// Deleted meanwhile with its marker removed: try once more as new.
		rev, err = r.update(ctx, b, key, val, 0)
		if err != nil && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
			return 0, true, nil, nil
		}
		return rev, false, nil, err
	case gerr != nil:
		return 0, false, nil, gerr
	}
	if op := m.Header.Get(kvOperation); op != kvPurge && op != kvDelete {
		return 0, true, m, nil
	}
	if val, err = seal(storedGen(m.Data)); err != nil {
		return 0, false, nil, err
	}
	rev, err = r.update(ctx, b, key, val, m.Sequence)
	if err != nil && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
		return 0, true, nil, nil
	}
	return rev, false, nil, err
}

// streamOf is the stream behind bucket b, looked up once.
func (r *Registry) streamOf(ctx context.Context, b *bucket) (jetstream.Stream, error) {
	b.streamMu.Lock()
	defer b.streamMu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	st, err := r.js.Stream(ctx, "KV_"+b.name)
	if err != nil {
		return nil, err
	}
	b.stream = st
	return st, nil
}
