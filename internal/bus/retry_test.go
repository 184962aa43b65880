package bus

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

func TestRetryUntilTransientErrorsPass(t *testing.T) {
	calls := 0
	errs := []error{context.DeadlineExceeded, nats.ErrNoResponders, jetstream.ErrJetStreamNotEnabled,
		&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"},
		&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}}
	err := Retry(context.Background(), zerolog.Nop(), "binding", func(context.Context) error {
		calls++
		if calls <= len(errs) {
			return errs[calls-1]
		}
		return nil
	})
	if err != nil || calls != len(errs)+1 {
		t.Fatalf("err %v after %d calls, want success after %d", err, calls, len(errs)+1)
	}
}

func TestRetryStopsOnPermanentErrors(t *testing.T) {
	for _, perm := range []error{
		&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNotFound, Description: "stream not found"},
		Permanent(errors.New("bad config")),
		nats.ErrAuthorization,
	} {
		calls := 0
		err := Retry(context.Background(), zerolog.Nop(), "binding", func(context.Context) error { calls++; return perm })
		if err == nil || calls != 1 {
			t.Fatalf("%v: err %v after %d calls, want it at once", perm, err, calls)
		}
	}
}

func TestRetryEndsWhenStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Retry(ctx, zerolog.Nop(), "binding", func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return context.DeadlineExceeded
	})
	if err == nil || calls != 3 {
		t.Fatalf("err %v after %d calls, want an error after 3", err, calls)
	}
}
