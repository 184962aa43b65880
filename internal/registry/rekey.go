package registry

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Rekey re-seals every connection and built-in secret not sealed under the
// current key, with compare-and-set so a concurrent write is never lost. It
// returns how many records it re-sealed.
func (r *Registry) Rekey(ctx context.Context) (int, error) {
	n := 0
	for _, b := range []*bucket{r.conns, r.secrets} {
		lister, err := b.kv.ListKeys(ctx)
		if err != nil {
			if errors.Is(err, jetstream.ErrNoKeysFound) {
				continue
			}
			return n, translate("listing "+b.name, err)
		}
		for key := range lister.Keys() {
			done, err := r.rekeyOne(ctx, b, key)
			if err != nil {
				return n, err
			}
			if done {
				n++
			}
		}
	}
	return n, nil
}

func (r *Registry) rekeyOne(ctx context.Context, b *bucket, key string) (bool, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, translate("reading "+b.name+"/"+key, err)
	}
	pt, kid, err := r.openValue(b.name, key, e.Value())
	if err != nil {
		what := "connection"
		if b == r.secrets {
			what = "secret"
		}
		return false, unreadable(what, key, err)
	}
	if kid == r.sealer.CurrentID() {
		return false, nil
	}
	var rec sealedRecord
	_ = json.Unmarshal(e.Value(), &rec)
	env, err := r.sealer.Seal(pt, associatedData(b.name, key))
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
