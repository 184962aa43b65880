package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// update writes as KeyValue.Update does: the same revisions stored, the
// same compare-and-set, and a conflict is the same error (ErrKeyExists,
// isWrongSequence, ErrKeyRevisionMismatch) whether the key holds a record
// (create) or another revision (update); a bad key is ErrInvalidKey.
func TestUpdateIsKeyValueUpdate(t *testing.T) {
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas"})
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{js: js}
	b := &bucket{name: "cas", kv: kv}
	rev, err := r.update(ctx, b, "k", []byte("1"), 0)
	if err != nil || rev != 1 {
		t.Fatalf("create: %d, %v", rev, err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "1" || e.Revision() != 1 {
		t.Fatalf("stored: %v, %v", e, err)
	}
	_, create := r.update(ctx, b, "k", []byte("2"), 0)
	_, stale := r.update(ctx, b, "k", []byte("2"), 7)
	_, kvCreate := kv.Update(ctx, "k", []byte("2"), 0)
	for name, err := range map[string]error{"create over a record": create, "update at another revision": stale} {
		if !errors.Is(err, jetstream.ErrKeyExists) || !isWrongSequence(err) || !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			t.Errorf("%s: %v, want a conflict", name, err)
		}
		if err.Error() != kvCreate.Error() && name == "create over a record" {
			t.Errorf("%s: %q, KeyValue.Update says %q", name, err, kvCreate)
		}
	}
	if rev, err := r.update(ctx, b, "k", []byte("3"), 1); err != nil || rev != 2 {
		t.Fatalf("update: %d, %v", rev, err)
	}
	// Without a deadline, as from a background task: the JetStream default.
	if rev, err := r.update(context.Background(), b, "k2", []byte("1"), 0); err != nil || rev != 3 {
		t.Fatalf("create without a deadline: %d, %v", rev, err)
	}
	if _, err := r.update(ctx, b, ".k", []byte("3"), 0); !errors.Is(err, jetstream.ErrInvalidKey) {
		t.Errorf("bad key: %v", err)
	}
}

// readAck reads the usual ack without a decoder and everything else as
// jetstream does.
func TestReadAck(t *testing.T) {
	for _, c := range []struct {
		ack  string
		seq  uint64
		fast bool
		err  error
	}{
		{`{"stream":"KV_c","seq":42}`, 42, true, nil},
		{`{"stream":"KV_c","seq":18446744073709551615}`, 18446744073709551615, true, nil},
		{`{"stream":"KV_c","seq":18446744073709551616}`, 0, false, jetstream.ErrInvalidJSAck},
		{`{"stream":"KV_c","domain":"d","seq":7}`, 7, false, nil},
		{`{"stream":"KV_c","seq":7,"duplicate":true}`, 7, false, nil},
		{`{"stream":"KV_other","seq":7}`, 7, false, nil},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"KV_c","seq":0}`, 0, false, jetstream.ErrKeyRevisionMismatch},
		{`{"error":{"code":503,"err_code":10076,"description":"jetstream not enabled"}}`, 0, false, jetstream.ErrJetStreamNotEnabled},
		{`{"seq":7}`, 0, false, jetstream.ErrInvalidJSAck},
		{`nonsense`, 0, false, jetstream.ErrInvalidJSAck},
		{`{"stream":"KV_c","seq":-1}`, 0, false, jetstream.ErrInvalidJSAck},
	} {
		_, fast := quickAck([]byte(c.ack), "KV_c")
		seq, err := readAck([]byte(c.ack), "KV_c")
		if fast != c.fast || seq != c.seq || (c.err == nil) != (err == nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("%s: %d %v (quick %v), want %d %v (quick %v)", c.ack, seq, err, fast, c.seq, c.err, c.fast)
		}
	}
}

// encodeRecord writes exactly what json.Marshal does.
func TestEncodeRecordIsMarshal(t *testing.T) {
	env := seal.Envelope{KeyID: "k-2026.1", Nonce: []byte{1, 2, 3, 250, 251}, Data: bytes.Repeat([]byte{0xfe, 7}, 40)}
	pub, _ := json.Marshal(map[string]any{"name": "c<1>&", "provider": "builtin", "groups": []string{"a"}})
	for _, rec := range []sealedRecord{
		{V: 2, Gen: 1764650000000000000, Public: pub, Sealed: env},
		{V: 2, Gen: 5, Version: 3, Sealed: env},
		{V: 1, Sealed: env},
		{V: 2, Gen: 1, Sealed: seal.Envelope{KeyID: `odd "kid"\`, Nonce: []byte{}, Data: nil}},
		{V: 2, Sealed: seal.Envelope{KeyID: "ünicode", Nonce: []byte{0}}},
	} {
		want, _ := json.Marshal(rec)
		got, err := encodeRecord(rec)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("encodeRecord:\n%s\nwant\n%s", got, want)
		}
	}
}

// encodeRecord sizes the record once: its one allocation is the record, also
// with the largest numbers (a generation, a version of 20 digits).
func TestEncodeRecordAllocatesOnce(t *testing.T) {
	env := seal.Envelope{KeyID: "k-2026.1", Nonce: bytes.Repeat([]byte{9}, 12), Data: bytes.Repeat([]byte{0xfe, 7}, 150)}
	pub, _ := json.Marshal(map[string]any{"name": "c0000001", "provider": "builtin", "groups": []string{"bio"}, "secrets": []string{"*"}})
	rec := sealedRecord{V: 2, Gen: ^uint64(0), Version: ^uint64(0), Public: pub, Sealed: env}
	if n := testing.AllocsPerRun(100, func() { _, _ = encodeRecord(rec) }); n != 1 {
		t.Errorf("encodeRecord allocates %v times, want 1", n)
	}
}

// associatedData is the text it always was (records sealed before open
// with it), in one allocation.
func TestAssociatedData(t *testing.T) {
	for _, c := range []struct {
		bucket, key string
		v           int
		gen         uint64
		want        string
	}{
		{"cloudbridge_connections", "c0000001", 2, 1764650000000000000, "cloudbridge/v1/cloudbridge_connections/c0000001/gen/1764650000000000000"},
		{"cloudbridge_secrets", "c1.db01", 2, 0, "cloudbridge/v1/cloudbridge_secrets/c1.db01/gen/0"},
		{"b", "k", 2, ^uint64(0), "cloudbridge/v1/b/k/gen/18446744073709551615"},
		{"cloudbridge_connections", "old", 1, 99, "cloudbridge/v1/cloudbridge_connections/old"},
	} {
		if got := string(associatedData(c.bucket, c.key, c.v, c.gen)); got != c.want {
			t.Errorf("associatedData(%q, %q, %d, %d) = %q, want %q", c.bucket, c.key, c.v, c.gen, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = associatedData("cloudbridge_connections", "c0000001", 2, ^uint64(0)) }); n != 1 {
		t.Errorf("associatedData allocates %v times, want 1", n)
	}
}
