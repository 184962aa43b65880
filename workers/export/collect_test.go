package export

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// collectorWithPull is a collector of a runner without a session: its
// pipeline has free batches and no flushers (the test takes what is
// submitted from queue), and its next fetch reads mb, whose messages the
// test hands in.
func collectorWithPull(free int, lim limits) (*collector, *pullBatch) {
	var delivered atomic.Int64
	r := &runner{w: &Worker{cfg: Config{LogsStream: DefaultLogsStream, Now: time.Now, AckWait: time.Minute}},
		sink: noopSink{&delivered}, lim: lim, alive: newKeepAlive(),
		mIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "in"})}
	r.dd = &dedupe{r: r, off: true}
	p := &pipeline{r: r, queue: make(chan *batch, batches), free: make(chan *batch, batches), done: make(chan struct{})}
	for range free {
		p.free <- &batch{}
	}
	c := &collector{r: r, p: p}
	c.b = p.next()
	// A pull of 250 messages that stays open until they came (no
	// subscription: finish's unsubscribe is a no-op).
	mb := &pullBatch{ch: make(chan *nats.Msg, 1000), want: 250, silence: time.Minute}
	c.ahead = mb
	return c, mb
}

// hand puts messages from..to-1 of a pull into mb, as the server sends them.
func hand(mb *pullBatch, from, to int) {
	for i := from; i < to; i++ {
		mb.ch <- &nats.Msg{Subject: "logs.app", Data: []byte(`{"level":"info","msg":"event"}`),
			Reply: fmt.Sprintf("$JS.ACK.%s.exp.1.%d.%d.1764650000123456789.0", DefaultLogsStream, i+1, i+1)}
	}
}

// TestFullBatchGoesOutMidPull: a pull of more than a batch (a first pull asks
// for max_events before a message's size is known) hands each batch to the
// flushers as soon as it is full, while the pull still brings messages; not
// once the pull has brought its last one. With no batch free, the messages
// wait in the carry and nothing more is taken from the pipeline.
func TestFullBatchGoesOutMidPull(t *testing.T) {
	lim := limits{maxEvents: 100, maxBytes: 1 << 20, maxWait: time.Hour}
	t.Run("batches free", func(t *testing.T) {
		c, mb := collectorWithPull(batches, lim)
		done := make(chan error, 1)
		go func() { done <- c.fetch(context.Background(), 250, time.Minute) }()
		hand(mb, 0, 150)
		select {
		case b := <-c.p.queue:
			if len(b.msgs) != 100 || b.recs[0].Seq != 1 || b.recs[99].Seq != 100 {
				t.Fatalf("first batch: %d messages, seqs %d..%d; want 1..100", len(b.msgs), b.recs[0].Seq, b.recs[len(b.recs)-1].Seq)
			}
		case err := <-done:
			t.Fatalf("the pull ended (%v) before its last message", err)
		case <-time.After(30 * time.Second):
			t.Fatal("the full batch was not submitted while the pull was open")
		}
		hand(mb, 150, 250)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the pull did not end with its last message")
		}
		b := <-c.p.queue
		if len(b.msgs) != 100 || b.recs[0].Seq != 101 {
			t.Fatalf("second batch: %d messages from seq %d; want 100 from 101", len(b.msgs), b.recs[0].Seq)
		}
		if len(c.b.msgs) != 50 || c.b.recs[0].Seq != 201 || len(c.carry) != 0 {
			t.Fatalf("being filled: %d messages from seq %d, carry %d; want 50 from 201, no carry", len(c.b.msgs), c.b.recs[0].Seq, len(c.carry))
		}
	})
	t.Run("no batch free", func(t *testing.T) {
		c, mb := collectorWithPull(1, lim)
		hand(mb, 0, 250)
		if err := c.fetch(context.Background(), 250, time.Minute); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		select {
		case b := <-c.p.queue:
			t.Fatalf("a batch of %d submitted with no batch free to follow it", len(b.msgs))
		default:
		}
		if len(c.b.msgs) != 100 || len(c.carry) != 150 {
			t.Fatalf("b %d messages, carry %d; want 100 and 150", len(c.b.msgs), len(c.carry))
		}
	})
}
