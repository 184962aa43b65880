package export

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
)

// limits bound a batch: it is submitted at whichever comes first.
type limits struct {
	maxEvents int           // records to send
	maxBytes  int           // bytes as counted by the sink's Size
	maxWait   time.Duration // since the batch's first message
}

// newLimits are the sink's per-call limits, lowered by the export's batch policy.
func newLimits(sink logevent.Limits, p *events.BatchPolicy) limits {
	l := limits{maxEvents: sink.MaxEvents, maxBytes: sink.MaxBytes, maxWait: events.DefaultMaxWait}
	if sink.MaxWait > 0 {
		l.maxWait = sink.MaxWait
	}
	if p != nil {
		if p.MaxEvents > 0 && p.MaxEvents < l.maxEvents {
			l.maxEvents = p.MaxEvents
		}
		if p.MaxBytes > 0 && p.MaxBytes < l.maxBytes {
			l.maxBytes = p.MaxBytes
		}
		if p.MaxWait > 0 {
			l.maxWait = p.MaxWait.D()
		}
	}
	return l
}

// collector fills batches from the consumer's handler and submits them at
// max_events, max_bytes or max_wait.
type collector struct {
	r *runner
	p *pipeline

	mu    sync.Mutex
	b     *batch
	epoch int // counts batches, so a stale max_wait timer does nothing
	timer *time.Timer
	done  bool
}

func (c *collector) handle(msg jetstream.Msg) {
	rec, o, size := c.r.prepare(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return // not acked: redelivered
	}
	if size > 0 && c.b.sent > 0 && c.b.bytes+size > c.r.lim.maxBytes {
		c.submit()
	}
	if c.b.empty() {
		epoch := c.epoch
		c.timer = time.AfterFunc(c.r.lim.maxWait, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.epoch == epoch && !c.done {
				c.submit()
			}
		})
	}
	if c.b.add(msg, rec, o, size) >= c.r.lim.maxEvents || c.b.bytes >= c.r.lim.maxBytes || len(c.b.msgs) >= 4*c.r.lim.maxEvents {
		c.submit()
	}
}

// submit hands the batch to the flusher; it runs under c.mu.
func (c *collector) submit() {
	c.epoch++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.b = c.p.submit(c.b)
}

// finish flushes the last batch and waits for the flusher.
func (c *collector) finish() {
	c.mu.Lock()
	c.submit()
	c.done = true
	c.mu.Unlock()
	c.p.close()
}

// pipeline overlaps filling one batch with delivering the other.
type pipeline struct {
	r     *runner
	queue chan *batch
	free  chan *batch
	done  chan struct{}
}

// flushers is how many batches are delivered at once; one more is filled
// meanwhile. CloudWatch no longer orders calls by sequence token, and Cloud
// Logging deduplicates by insertId, so batches may go out side by side.
const flushers = 2

func newPipeline(r *runner) *pipeline {
	p := &pipeline{r: r, queue: make(chan *batch), free: make(chan *batch, flushers+1), done: make(chan struct{})}
	for range flushers + 1 {
		p.free <- &batch{}
	}
	var wg sync.WaitGroup
	for range flushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range p.queue {
				r.flush(b)
				p.free <- b
			}
		}()
	}
	go func() { wg.Wait(); close(p.done) }()
	return p
}

// next is an empty batch, waiting while both are busy.
func (p *pipeline) next() *batch { return <-p.free }

// submit hands b to the flusher and returns an empty batch.
func (p *pipeline) submit(b *batch) *batch {
	if b.empty() {
		return b
	}
	p.r.alive.add(b)
	p.queue <- b
	return p.next()
}

// close waits for the flusher to finish.
func (p *pipeline) close() {
	close(p.queue)
	<-p.done
}

// batch is a batch being filled or delivered.
type batch struct {
	msgs  []jetstream.Msg
	recs  []logevent.Record
	out   []logevent.Outcome
	acked []bool // messages acked as soon as the call carrying them succeeded
	bytes int
	sent  int // records handed to the sink
}

func (b *batch) empty() bool { return len(b.msgs) == 0 }

func (b *batch) reset() {
	clear(b.msgs)
	clear(b.recs)
	b.msgs, b.recs, b.out, b.acked = b.msgs[:0], b.recs[:0], b.out[:0], b.acked[:0]
	b.bytes, b.sent = 0, 0
}

// add appends a prepared message; it returns the records to send.
func (b *batch) add(msg jetstream.Msg, rec logevent.Record, o logevent.Outcome, size int) int {
	b.msgs = append(b.msgs, msg)
	b.recs = append(b.recs, rec)
	b.out = append(b.out, o)
	b.acked = append(b.acked, false)
	b.bytes += size
	if o.Status == logevent.Pending {
		b.sent++
	}
	return b.sent
}

// prepare parses msg: its record, its initial outcome (dead when empty,
// dropped below min_level) and its size for the sink (0 when not sent).
func (r *runner) prepare(msg jetstream.Msg) (logevent.Record, logevent.Outcome, int) {
	r.mIn.Inc()
	var received time.Time
	var seq uint64
	stream := r.w.cfg.LogsStream
	if meta, err := msg.Metadata(); err == nil {
		received, seq, stream = meta.Timestamp, meta.Sequence.Stream, meta.Stream
	} else {
		received = r.w.cfg.Now()
	}
	rec := logevent.Record{Event: logevent.Parse(msg.Data(), received), Subject: msg.Subject(), Stream: stream, Seq: seq, Received: received}
	switch {
	case rec.Empty:
		return rec, logevent.Outcome{Status: logevent.Dead, Reason: events.DeadInvalid, Detail: "empty message"}, 0
	case logevent.Below(rec.Level, r.spec.exp.MinLevel):
		return rec, logevent.Outcome{Status: logevent.Dropped}, 0
	}
	return rec, logevent.Outcome{}, r.sink.Size(&rec)
}
