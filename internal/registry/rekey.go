package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// RekeyResult is what a rekey did: how many records it re-sealed under the
// current key, and the keys of the records it could not (unreadable with
// this worker's keys, tampered or replayed), sorted by bucket then key:
// connection names, and <connection>.<secret> for built-in secrets.
type RekeyResult struct {
	Resealed int
	Failed   []string
}

// Rekey re-seals every connection and built-in secret not sealed under the
// current key, with compare-and-set so a concurrent write is never lost. A
// record that cannot be opened is logged, listed in Failed and skipped: the
// rest are re-sealed. Only failing to list or write a bucket stops it.
func (r *Registry) Rekey(ctx context.Context) (RekeyResult, error) {
	var res RekeyResult
	for _, b := range []*bucket{r.conns, r.secrets} {
		lister, err := b.kv.ListKeys(ctx)
		if err != nil {
			if errors.Is(err, jetstream.ErrNoKeysFound) {
				continue
			}
			return res, translate("listing "+b.name, err)
		}
		for key := range lister.Keys() {
			done, err := r.rekeyOne(ctx, b, key)
			var unreadable *unreadableError
			switch {
			case errors.As(err, &unreadable):
				r.log.Error().Str("bucket", b.name).Str("key", key).Err(unreadable.err).Msg("rekey: skipping a record that cannot be opened")
				res.Failed = append(res.Failed, key)
			case err != nil:
				return res, err
			case done:
				res.Resealed++
			}
		}
	}
	return res, nil
}

// unreadableError is a record rekey cannot open.
type unreadableError struct{ err error }

func (e *unreadableError) Error() string { return e.err.Error() }

func (r *Registry) rekeyOne(ctx context.Context, b *bucket, key string) (bool, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, translate("reading "+b.name+"/"+key, err)
	}
	if b == r.conns {
		r.settle(key)
	}
	rec, pt, err := r.openChecked(b.name, key, e.Value())
	if err != nil {
		return false, &unreadableError{err: fmt.Errorf("rekeying: %w", err)}
	}
	if rec.Sealed.KeyID == r.sealer.CurrentID() {
		return false, nil
	}
	// A re-seal is a write: it moves the record to a new generation (and a
	// version 1 record to version 2).
	rec.V, rec.Gen = 2, r.nextGen(b.name, key, rec.Gen)
	env, err := r.sealer.Seal(pt, associatedData(b.name, key, rec.V, rec.Gen))
	if err != nil {
		return false, err
	}
	rec.Sealed = env
	val, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	if _, err := b.kv.Update(ctx, key, val, e.Revision()); err != nil {
		return false, translate("re-sealing "+b.name+"/"+key, err)
	}
	return true, nil
}

// CurrentKeyID is the id of the key sealing new records.
func (r *Registry) CurrentKeyID() string { return r.sealer.CurrentID() }
