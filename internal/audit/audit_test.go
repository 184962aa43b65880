package audit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
)

// fakeJS stores what PublishMsg is given, once gate lets it (or fails with
// err).
type fakeJS struct {
	jetstream.JetStream
	gate chan struct{}
	got  chan *nats.Msg
	err  error
}

func (f *fakeJS) PublishMsg(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	f.got <- m
	return &jetstream.PubAck{}, nil
}

func event(op string) *events.AuditEvent {
	return &events.AuditEvent{Time: time.Now(), Op: op, Outcome: events.OutcomeOK, RequestID: "r"}
}

// Best-effort: Publish never waits for the stream; past the buffer an event
// is counted dropped; Stop publishes what is buffered.
func TestBestEffortNeverBlocksAndCountsAFullBuffer(t *testing.T) {
	js := &fakeJS{gate: make(chan struct{}), got: make(chan *nats.Msg, 10)}
	p := New(Config{JS: js, Buffer: 1, Batch: 1, AckTimeout: 10 * time.Second, Logger: zerolog.Nop()})
	before := Dropped("buffer_full")
	// The first event is taken by the publishing goroutine, which then waits
	// on the gate; the second fills the buffer; the rest are dropped.
	if err := p.Publish(context.Background(), "a.1", "", event(events.OpResolve)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(p.ch) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the publishing goroutine never took the first event")
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= 5; i++ {
			_ = p.Publish(context.Background(), "a.n", "", event(events.OpResolve))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("best-effort Publish blocked on a stream that does not answer")
	}
	if d := Dropped("buffer_full") - before; d != 3 {
		t.Fatalf("%v events counted dropped, want 3", d)
	}
	close(js.gate)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(js.got); n != 2 {
		t.Fatalf("%d events stored, want 2", n)
	}
	before = Dropped("stopped")
	_ = p.Publish(context.Background(), "a.late", "", event(events.OpResolve))
	if Dropped("stopped") != before+1 {
		t.Fatal("an event after Stop not counted")
	}
}

// Only the invalidate broadcast carries a message id for the stream's
// duplicate detection.
func TestMessageIDOnlyForInvalidate(t *testing.T) {
	js := &fakeJS{got: make(chan *nats.Msg, 2)}
	p := New(Config{JS: js, Mode: Required, Logger: zerolog.Nop()})
	defer func() { _ = p.Stop(context.Background()) }()
	for _, op := range []string{events.OpResolve, events.OpInvalidate} {
		if err := p.Publish(context.Background(), "a."+op, op+":_INBOX.x", event(op)); err != nil {
			t.Fatal(err)
		}
		m := <-js.got
		id := ""
		if m.Header != nil {
			id = m.Header.Get(jetstream.MsgIDHeader)
		}
		if (op == events.OpInvalidate) != (id == op+":_INBOX.x") {
			t.Fatalf("%s: message id %q", op, id)
		}
	}
}

// Required: Publish returns the store's error, counted refused; a missing
// stream calls Recover, at most once per RecoverEvery.
func TestRequiredRefusesAndRecoversAMissingStream(t *testing.T) {
	js := &fakeJS{err: jetstream.ErrNoStreamResponse}
	var calls atomic.Int32
	recovered := make(chan struct{}, 10)
	p := New(Config{JS: js, Mode: Required, Logger: zerolog.Nop(), Recover: func(context.Context) error {
		calls.Add(1)
		recovered <- struct{}{}
		return nil
	}})
	before := Dropped("refused")
	for i := 0; i < 5; i++ {
		if err := p.Publish(context.Background(), "a.b", "", event(events.OpResolve)); !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Fatalf("required publish to a missing stream: %v", err)
		}
	}
	if Dropped("refused") != before+5 {
		t.Fatal("refused events not counted")
	}
	select {
	case <-recovered:
	case <-time.After(10 * time.Second):
		t.Fatal("Recover not called for a missing stream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("Recover called %d times within RecoverEvery, want 1", n)
	}
	// Another failure is no reason to re-create the stream.
	js2 := &fakeJS{err: errors.New("maximum messages exceeded")}
	p2 := New(Config{JS: js2, Mode: Required, Logger: zerolog.Nop(), Recover: func(context.Context) error {
		t.Error("Recover called for a stream that exists")
		return nil
	}})
	_ = p2.Publish(context.Background(), "a.b", "", event(events.OpResolve))
	if err := p2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFingerprint(t *testing.T) {
	a, b := NewFingerprinter([]byte("k1")), NewFingerprinter([]byte("k2"))
	v := []byte("password01")
	if a.Sum(v) != a.Sum(v) || len(a.Sum(v)) != 64 || a.Sum(v) == b.Sum(v) || a.Sum(v) == a.Sum([]byte("password02")) {
		t.Fatal("fingerprints are not a keyed function of the value")
	}
	var none *Fingerprinter
	if none.Sum(v) != "" {
		t.Fatal("no fingerprinter: no fingerprint")
	}
}

// Conn is not used by batches of one.
func (f *fakeJS) Conn() *nats.Conn { return nil }
