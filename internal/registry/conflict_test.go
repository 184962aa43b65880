package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestIsWrongSequence: every form a compare-and-set conflict takes is one,
// the 10164 of a replicated stream (which KeyValue.Update wraps as
// ErrKeyRevisionMismatch, and which ErrKeyExists does not match) included;
// other errors are not.
func TestIsWrongSequence(t *testing.T) {
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
	if _, err := kv.Put(ctx, "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	_, update := kv.Update(ctx, "k", []byte("2"), 99) // a real 10071, as Update returns it
	_, create := kv.Create(ctx, "k", []byte("2"))
	if update == nil || create == nil {
		t.Fatalf("no conflict: %v %v", update, create)
	}
	// What KeyValue.Update returns for a replicated stream's answer
	// (mapRevisionMismatch in nats.go v1.55.0's kv.go), and that answer
	// as a raw publish with an expected sequence gets it.
	r3 := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}
	r3Update := fmt.Errorf("%w: %w", r3, jetstream.ErrKeyRevisionMismatch)
	if errors.Is(r3Update, jetstream.ErrKeyExists) {
		t.Fatal("the premise: ErrKeyExists does not match 10164")
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"update 10071", update, true},
		{"create", create, true},
		{"update 10164", r3Update, true},
		{"publish 10164", r3, true},
		{"ErrKeyRevisionMismatch", jetstream.ErrKeyRevisionMismatch, true},
		{"not found", jetstream.ErrKeyNotFound, false},
		{"timeout", context.DeadlineExceeded, false},
		{"other API error", &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled}, false},
		{"nil", nil, false},
	} {
		if got := isWrongSequence(c.err); got != c.want {
			t.Errorf("%s (%v): %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
