package export

import (
	"context"
	"errors"
	"fmt"
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
// max_events, max_bytes or max_wait. The handler never blocks: a message
// goes into the batch being filled, or, while every batch is taken (both
// flushers busy, one batch queued), into the inbox, and consuming pauses
// until a batch is free. So nothing waits unseen in the client's buffer
// behind a slow sink: every message this worker holds is in a batch or in
// the inbox, and all of those are kept alive with InProgress, so none runs
// out of AckWait and is delivered by another worker too. What is not pulled
// stays available to the other workers sharing the export.
type collector struct {
	r    *runner
	p    *pipeline
	cons jetstream.Consumer

	mu     sync.Mutex
	b      *batch     // being filled; nil while every batch is taken
	inbox  []prepared // received while b was nil or ahead of it: the start of the next batches
	opened time.Time  // when b got its first message
	epoch  int        // counts batches, so a stale max_wait timer does nothing
	timer  *time.Timer
	done   bool          // stopped: the handler gives back what still comes
	wake   chan struct{} // b became nil with messages in the inbox
}

// prepared is a received message with its parsed record.
type prepared struct {
	msg  jetstream.Msg
	rec  logevent.Record
	out  logevent.Outcome
	size int
}

// run consumes until ctx ends or the consumer is gone; then it drains the
// client, flushes what it holds and waits for the flushers.
func (c *collector) run(ctx context.Context) error {
	c.wake = make(chan struct{}, 1)
	c.b = c.p.next()
	alive := time.NewTicker(c.r.w.cfg.AckWait / 3)
	defer alive.Stop()
	var cc jetstream.ConsumeContext
	defer func() {
		if cc != nil {
			c.drain(cc)
		}
		c.finish()
	}()
	for ctx.Err() == nil {
		c.mu.Lock()
		paused := c.b == nil
		c.mu.Unlock()
		if paused && cc != nil {
			// Every batch is taken: stop pulling. What the client still
			// holds goes to the inbox, kept alive.
			c.drain(cc)
			cc = nil
		}
		if paused {
			select {
			case b := <-c.p.free:
				c.refill(b)
			case <-alive.C:
				c.touch()
			case <-ctx.Done():
			}
			continue
		}
		if cc == nil {
			var err error
			cc, err = c.cons.Consume(c.handle, jetstream.PullMaxMessagesWithBytesLimit(c.r.lim.maxEvents, max(2*c.r.lim.maxBytes, 16<<20)),
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
					c.r.log.Debug().Err(err).Msg("consume")
				}))
			if err != nil {
				return fmt.Errorf("consuming: %w", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-cc.Closed():
			cc = nil
			if ctx.Err() == nil {
				return errors.New("consumer closed")
			}
		case <-c.wake:
		case <-alive.C:
			c.touch()
		}
	}
	return nil
}

// drain stops cc, letting the handler take what the client holds.
func (c *collector) drain(cc jetstream.ConsumeContext) {
	cc.Drain()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-cc.Closed():
	case <-t.C:
		cc.Stop()
	case <-c.r.flushCtx.Done():
		cc.Stop()
	}
}

func (c *collector) handle(msg jetstream.Msg) {
	p := c.r.prepare(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		_ = msg.Nak()
		return
	}
	c.place(p)
}

// place adds p to b, or to the inbox when b is taken or the inbox is
// ahead of it; it runs under c.mu.
func (c *collector) place(p prepared) {
	if c.b == nil || len(c.inbox) > 0 {
		c.inbox = append(c.inbox, p)
		c.signal()
		return
	}
	c.add(p)
}

// add adds p to b (not nil), submitting b first when p does not fit and
// after when it is full; under c.mu.
func (c *collector) add(p prepared) {
	if p.size > 0 && c.b.sent > 0 && c.b.bytes+p.size > c.r.lim.maxBytes {
		c.submit()
		if c.b == nil {
			c.inbox = append(c.inbox, p)
			c.signal()
			return
		}
	}
	if c.b.empty() {
		c.opened = time.Now()
		epoch := c.epoch
		c.timer = time.AfterFunc(c.r.lim.maxWait, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.epoch == epoch && !c.done && c.b != nil {
				c.submit()
			}
		})
	}
	if c.b.add(p.msg, p.rec, p.out, p.size) >= c.r.lim.maxEvents || c.b.bytes >= c.r.lim.maxBytes || len(c.b.msgs) >= 4*c.r.lim.maxEvents {
		c.submit()
	}
}

// submit hands b to the flushers and takes a free batch if there is one
// (else b is nil until run finds one); under c.mu. It never blocks: there
// are flushers+1 batches and the queue holds them all.
func (c *collector) submit() {
	c.epoch++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.p.submit(c.b)
	select {
	case c.b = <-c.p.free:
	default:
		c.b = nil
		c.signal()
	}
}

func (c *collector) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// refill makes the free batch fb the one being filled (when none is) and
// moves the inbox into it.
func (c *collector) refill(fb *batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b != nil {
		c.p.free <- fb
		return
	}
	c.b = fb
	c.moveInbox()
}

// moveInbox moves the inbox into b (not nil) and the batches that free up
// at once after it; what does not fit stays; under c.mu.
func (c *collector) moveInbox() {
	inbox := c.inbox
	c.inbox = nil
	for i, p := range inbox {
		if c.b == nil {
			c.inbox = append(inbox[:0:0], inbox[i:]...)
			return
		}
		c.add(p)
	}
}

// touch sends InProgress for the messages of b and of the inbox.
func (c *collector) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b != nil {
		for _, m := range c.b.msgs {
			_ = m.InProgress()
		}
	}
	for _, p := range c.inbox {
		_ = p.msg.InProgress()
	}
}

// finish flushes what is held (the inbox as batches free up, unless the stop
// deadline passes first: then it is given back) and waits for the flushers.
func (c *collector) finish() {
	c.mu.Lock()
	c.done = true
	for len(c.inbox) > 0 {
		if c.b == nil {
			c.mu.Unlock()
			var fb *batch
			select {
			case fb = <-c.p.free:
			case <-c.r.flushCtx.Done():
			}
			c.mu.Lock()
			if fb == nil {
				for _, p := range c.inbox {
					_ = p.msg.Nak()
				}
				c.inbox = nil
				break
			}
			c.b = fb
		}
		c.moveInbox()
	}
	if c.b != nil && !c.b.empty() {
		c.submit()
	}
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
	p := &pipeline{r: r, queue: make(chan *batch, flushers+1), free: make(chan *batch, flushers+1), done: make(chan struct{})}
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

// next is an empty batch, waiting while all are busy.
func (p *pipeline) next() *batch { return <-p.free }

// submit hands b to a flusher (an empty b goes back to the free ones). It
// does not wait: a batch is only filled when one of the flushers+1 batches
// was free, so a flusher or the queue's room takes it.
func (p *pipeline) submit(b *batch) {
	if b.empty() {
		p.free <- b
		return
	}
	p.r.alive.add(b)
	p.queue <- b
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
func (r *runner) prepare(msg jetstream.Msg) prepared {
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
		return prepared{msg, rec, logevent.Outcome{Status: logevent.Dead, Reason: events.DeadInvalid, Detail: "empty message"}, 0}
	case logevent.Below(rec.Level, r.spec.exp.MinLevel):
		return prepared{msg, rec, logevent.Outcome{Status: logevent.Dropped}, 0}
	}
	return prepared{msg, rec, logevent.Outcome{}, r.sink.Size(&rec)}
}
