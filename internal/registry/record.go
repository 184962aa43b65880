package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

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
func associatedData(bucket, key string, v int, gen uint64) []byte {
	ad := "cloudbridge/v1/" + bucket + "/" + key
	if v >= 2 {
		ad += "/gen/" + strconv.FormatUint(gen, 10)
	}
	return []byte(ad)
}

// genKey names a record for seenGen (bucket is one of the registry's
// bucket names, key shares the record's key string).
type genKey struct{ bucket, key string }

// nextGen is the generation of a new write of bucket/key: above floor (the
// stored record's), above every generation this worker has seen for it, and
// at least the current time in nanoseconds, so a write by any worker (even
// one that never saw the key, or after a delete) lands above the records
// other workers remember.
func (r *Registry) nextGen(bucket, key string, floor uint64) uint64 {
	gen := uint64(time.Now().UnixNano())
	if floor >= gen {
		gen = floor + 1
	}
	r.genMu.Lock()
	if seen := r.seenGen[genKey{bucket, key}]; seen >= gen {
		gen = seen + 1
	}
	r.genMu.Unlock()
	return gen
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
// rollback when a newer generation was seen before.
func (r *Registry) observeGen(bucket, key string, gen uint64) error {
	k := genKey{bucket, key}
	r.genMu.Lock()
	defer r.genMu.Unlock()
	if seen := r.seenGen[k]; gen < seen {
		metrics.RegistryRollbackRefused.WithLabelValues(bucket).Inc()
		r.log.Error().Str("bucket", bucket).Str("key", key).Uint64("gen", gen).Uint64("seen_gen", seen).
			Msg("refusing a sealed record older than one already seen for its key (rolled back or replayed)")
		return ErrRollback
	}
	r.seenGen[k] = gen
	return nil
}

// raiseGen records that bucket/key was read at gen without refusing an
// older one: for a record loaded at start and opened later (connSlot), which
// was the first record of its key this worker saw, so a generation seen since
// can only be a newer state of the bucket.
func (r *Registry) raiseGen(bucket, key string, gen uint64) {
	k := genKey{bucket, key}
	r.genMu.Lock()
	if gen > r.seenGen[k] {
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
	val, err := json.Marshal(rec)
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
