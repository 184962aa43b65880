package registry

import (
	"encoding/json"
	"fmt"

	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// sealedRecord is how a sealed value is stored: the envelope, and for
// connections a redacted copy so operators can read the bucket.
type sealedRecord struct {
	V      int             `json:"v"`
	Public json.RawMessage `json:"public,omitempty"`
	// Version counts the puts of a built-in secret: 1, 2, 3…
	Version uint64        `json:"version,omitempty"`
	Sealed  seal.Envelope `json:"sealed"`
}

// associatedData binds a ciphertext to its bucket and key.
func associatedData(bucket, key string) []byte {
	return []byte("cloudbridge/v1/" + bucket + "/" + key)
}

func (r *Registry) sealValue(bucket, key string, plaintext []byte, public any) ([]byte, error) {
	env, err := r.sealer.Seal(plaintext, associatedData(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("sealing %s/%s: %w", bucket, key, err)
	}
	rec := sealedRecord{V: 1, Sealed: env}
	if public != nil {
		if rec.Public, err = json.Marshal(public); err != nil {
			return nil, fmt.Errorf("encoding %s/%s: %w", bucket, key, err)
		}
	}
	return json.Marshal(rec)
}

func (r *Registry) openValue(bucket, key string, stored []byte) ([]byte, string, error) {
	var rec sealedRecord
	if err := json.Unmarshal(stored, &rec); err != nil {
		return nil, "", fmt.Errorf("decoding record %s/%s: %w", bucket, key, err)
	}
	if rec.V != 1 {
		return nil, "", fmt.Errorf("record %s/%s: unknown version %d", bucket, key, rec.V)
	}
	pt, err := r.sealer.Open(rec.Sealed, associatedData(bucket, key))
	if err != nil {
		return nil, "", fmt.Errorf("opening record %s/%s: %w", bucket, key, err)
	}
	return pt, rec.Sealed.KeyID, nil
}
