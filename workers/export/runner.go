package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// runner runs one export block: fetch, batch, deliver, ack.
type runner struct {
	w    *Worker
	spec spec
	name string
	log  zerolog.Logger

	fetchCtx    context.Context // canceled to stop fetching
	stopFetch   context.CancelFunc
	flushCtx    context.Context // canceled when the stop deadline passes
	cancelFlush context.CancelFunc
	done        chan struct{}

	sink Sink
	lag  atomic.Uint64 // messages not yet delivered to any worker, at the last message
	// batch limits
	maxEvents, maxBytes int
	maxWait             time.Duration

	mIn, mExported, mDropped prometheus.Counter
	mBatchEvents, mBatchSize prometheus.Observer
	mLag                     prometheus.Gauge
}

func newRunner(w *Worker, sp spec) *runner {
	name := sp.exp.Name
	r := &runner{
		w: w, spec: sp, name: name, done: make(chan struct{}),
		log:          w.log.With().Str("export", name).Logger(),
		mIn:          metrics.ExportEventsIn.WithLabelValues(name),
		mExported:    metrics.ExportEventsExported.WithLabelValues(name),
		mDropped:     metrics.ExportDroppedLevel.WithLabelValues(name),
		mBatchEvents: metrics.ExportBatchEvents.WithLabelValues(name),
		mBatchSize:   metrics.ExportBatchBytes.WithLabelValues(name),
		mLag:         metrics.ExportConsumerLag.WithLabelValues(name),
	}
	r.fetchCtx, r.stopFetch = context.WithCancel(context.Background())
	r.flushCtx, r.cancelFlush = context.WithCancel(context.Background())
	return r
}

// stop stops fetching and waits for the in-flight batch to be flushed; when
// ctx ends first, the flush is abandoned (its messages are nak'ed).
func (r *runner) stop(ctx context.Context) error {
	r.stopFetch()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.cancelFlush()
		<-r.done
		return ctx.Err()
	}
}

// run waits for the runner it replaces (after, may be nil), sets up the sink
// and the consumer, retrying with backoff until they work, and consumes until
// stopped.
func (r *runner) run(after <-chan struct{}) {
	defer close(r.done)
	defer r.cancelFlush()
	defer func() {
		if r.sink != nil {
			if err := r.sink.Close(); err != nil {
				r.log.Debug().Err(err).Msg("closing sink")
			}
		}
	}()
	if after != nil {
		select {
		case <-after:
		case <-r.fetchCtx.Done():
			return
		}
	}
	for attempt := 0; r.fetchCtx.Err() == nil; attempt++ {
		err := r.session()
		if err == nil || r.fetchCtx.Err() != nil {
			return
		}
		r.log.Error().Err(err).Msg("export interrupted; retrying")
		r.sleep(r.fetchCtx, attempt)
	}
}

func (r *runner) session() error {
	w := r.w
	if r.sink == nil {
		sink, err := w.cfg.Sinks(r.fetchCtx, r.spec.exp, r.spec.conn)
		if err != nil {
			return fmt.Errorf("creating sink: %w", err)
		}
		r.sink = sink
		lim := sink.Limits()
		r.maxEvents, r.maxBytes, r.maxWait = lim.MaxEvents, lim.MaxBytes, events.DefaultMaxWait
		if b := r.spec.exp.Batch; b != nil {
			if b.MaxEvents > 0 && b.MaxEvents < r.maxEvents {
				r.maxEvents = b.MaxEvents
			}
			if b.MaxBytes > 0 && b.MaxBytes < r.maxBytes {
				r.maxBytes = b.MaxBytes
			}
			if b.MaxWait > 0 {
				r.maxWait = b.MaxWait.D()
			}
		}
	}
	cons, err := w.cfg.JS.CreateOrUpdateConsumer(r.fetchCtx, w.cfg.LogsStream, jetstream.ConsumerConfig{
		Durable:        events.ExportConsumer(r.name),
		Description:    "cloudbridge log export " + r.name,
		FilterSubjects: r.spec.exp.Subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.cfg.AckWait,
		MaxDeliver:     -1,
		// Room for every worker to hold a batch being flushed and one being filled.
		MaxAckPending: max(4*r.maxEvents, 1000) * 4,
	})
	if err != nil {
		return fmt.Errorf("creating consumer: %w", err)
	}
	// The handler fills batches on the client's delivery goroutine; a full
	// batch goes to the flusher, and while both batches are busy the handler
	// blocks, the client stops taking messages and stops pulling once
	// MaxMessages are outstanding: back-pressure, bounded memory.
	c := &collector{r: r, p: newPipeline(r)}
	c.b = c.p.next()
	cc, err := cons.Consume(c.handle, jetstream.PullMaxMessagesWithBytesLimit(r.maxEvents, max(2*r.maxBytes, 16<<20)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Debug().Err(err).Msg("consume")
		}))
	if err != nil {
		c.p.close()
		return fmt.Errorf("consuming: %w", err)
	}
	r.log.Info().Msg("export running")
	select {
	case <-r.fetchCtx.Done():
	case <-cc.Closed():
	}
	// Stop fetching: take what the client already holds, flush, return.
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
	}
	c.finish()
	if r.fetchCtx.Err() == nil {
		return errors.New("consumer closed")
	}
	return nil
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
	if size > 0 && c.b.sent > 0 && c.b.bytes+size > c.r.maxBytes {
		c.submit()
	}
	if c.b.empty() {
		epoch := c.epoch
		c.timer = time.AfterFunc(c.r.maxWait, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.epoch == epoch && !c.done {
				c.submit()
			}
		})
	}
	if c.b.add(msg, rec, o, size) >= c.r.maxEvents || c.b.bytes >= c.r.maxBytes || len(c.b.msgs) >= 4*c.r.maxEvents {
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
	bytes int
	sent  int // records handed to the sink
}

func (b *batch) empty() bool { return len(b.msgs) == 0 }

func (b *batch) reset() {
	clear(b.msgs)
	clear(b.recs)
	b.msgs, b.recs, b.out = b.msgs[:0], b.recs[:0], b.out[:0]
	b.bytes, b.sent = 0, 0
}

// add appends a prepared message; it returns the records to send.
func (b *batch) add(msg jetstream.Msg, rec logevent.Record, o logevent.Outcome, size int) int {
	b.msgs = append(b.msgs, msg)
	b.recs = append(b.recs, rec)
	b.out = append(b.out, o)
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
		r.lag.Store(meta.NumPending)
	} else {
		received = r.w.cfg.Now()
	}
	rec := logevent.Record{Event: logevent.Parse(msg.Data(), received), Subject: msg.Subject(), Stream: stream, Seq: seq}
	switch {
	case rec.Empty:
		return rec, logevent.Outcome{Status: logevent.Dead, Reason: events.DeadInvalid, Detail: "empty message"}, 0
	case logevent.Below(rec.Level, r.spec.exp.MinLevel):
		return rec, logevent.Outcome{Status: logevent.Dropped}, 0
	}
	return rec, logevent.Outcome{}, r.sink.Size(&rec)
}

// flush delivers the batch, retrying what failed with backoff until it is
// delivered or the stop deadline passes; then it dead-letters, acks, naks and
// reports, and empties the batch.
func (r *runner) flush(b *batch) {
	if b.empty() {
		return
	}
	defer b.reset()
	start := time.Now()
	r.mLag.Set(float64(r.lag.Load()))
	ctx := r.flushCtx
	lastProgress := start
	for attempt := 0; b.sent > 0; attempt++ {
		err := r.sink.Write(ctx, b.recs, b.out)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			r.abandon(b)
			return
		}
		reason := retryReason(err)
		metrics.ExportRetries.WithLabelValues(r.name, reason).Inc()
		r.log.Warn().Err(err).Int("attempt", attempt+1).Msg("delivery failed; retrying")
		if time.Since(lastProgress) > r.w.cfg.AckWait/3 {
			for i, m := range b.msgs {
				if b.out[i].Status == logevent.Pending {
					_ = m.InProgress()
				}
			}
			lastProgress = time.Now()
		}
		if !r.sleep(ctx, attempt) {
			r.abandon(b)
			return
		}
	}
	r.settle(b, start)
}

// settle acts on every outcome of a delivered batch.
func (r *runner) settle(b *batch, start time.Time) {
	ev := events.ExportedEvent{Export: r.name}
	now := r.w.cfg.Now()
	var dead []int
	for i := range b.msgs {
		o := &b.out[i]
		rec := &b.recs[i]
		switch o.Status {
		case logevent.Delivered:
			ev.Events++
			ev.Bytes += len(rec.Message)
			if ev.FirstSeq == 0 || rec.Seq < ev.FirstSeq {
				ev.FirstSeq = rec.Seq
			}
			ev.LastSeq = max(ev.LastSeq, rec.Seq)
		case logevent.Dropped:
			r.mDropped.Inc()
		case logevent.RetryLater:
			ahead := rec.Time.Sub(now)
			if ahead > futureDeadLetterAge {
				o.Status, o.Reason, o.Detail = logevent.Dead, events.DeadRejected, "timestamp more than 14 days in the future"
				dead = append(dead, i)
				continue
			}
			ev.Rejected++
			metrics.ExportRetries.WithLabelValues(r.name, "too_new").Inc()
		case logevent.Dead:
			dead = append(dead, i)
		}
	}
	deadOK := r.deadLetter(b, dead)
	ev.Dead = len(dead)
	for i, m := range b.msgs {
		switch b.out[i].Status {
		case logevent.Delivered, logevent.Dropped:
			_ = m.Ack()
		case logevent.Dead:
			if deadOK[i] {
				_ = m.Ack()
			} else {
				_ = m.Nak()
			}
		case logevent.RetryLater:
			// Wait until the event is within CloudWatch's 2-hour window.
			d := b.recs[i].Time.Sub(now) - 2*time.Hour + 30*time.Second
			_ = m.NakWithDelay(min(max(d, time.Second), r.w.cfg.TooNewMax))
		default:
			_ = m.Nak()
		}
	}
	ev.DurationMS = time.Since(start).Milliseconds()
	r.log.Debug().Int("events", ev.Events).Int("dead", ev.Dead).Int64("duration_ms", ev.DurationMS).Uint64("seq", ev.LastSeq).Msg("batch delivered")
	if ev.Events > 0 {
		r.mExported.Add(float64(ev.Events))
		r.mBatchEvents.Observe(float64(ev.Events))
		r.mBatchSize.Observe(float64(ev.Bytes))
	}
	if ev.Events+ev.Dead+ev.Rejected > 0 {
		if body, err := json.Marshal(ev); err == nil {
			_ = r.w.cfg.NC.Publish(r.w.cfg.Subjects.Exported(r.name), body)
		}
	}
}

// deadLetter publishes the dead letters of the records at idx to the
// dead-letter stream and reports which ones the stream stored.
func (r *runner) deadLetter(b *batch, idx []int) map[int]bool {
	if len(idx) == 0 {
		return nil
	}
	ok := make(map[int]bool, len(idx))
	// In chunks, to stay within the client's limit of outstanding async publishes.
	for len(idx) > 0 {
		n := min(len(idx), 500)
		r.deadLetterChunk(b, idx[:n], ok)
		idx = idx[n:]
	}
	return ok
}

func (r *runner) deadLetterChunk(b *batch, idx []int, ok map[int]bool) {
	type pending struct {
		i   int
		ack jetstream.PubAckFuture
	}
	var futures []pending
	subject := r.w.cfg.Subjects.Dead(r.name)
	for _, i := range idx {
		o, rec := b.out[i], b.recs[i]
		dl := events.DeadLetter{Export: r.name, Subject: rec.Subject, Seq: rec.Seq, Reason: o.Reason,
			Detail: o.Detail, Payload: b.msgs[i].Data(), Time: r.w.cfg.Now().UTC()}
		body, err := json.Marshal(dl)
		if err != nil {
			continue
		}
		m := nats.NewMsg(subject)
		m.Data = body
		// Deduplicated by the dead-letter stream if the message is redelivered.
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d-%s", rec.Stream, rec.Seq, r.name))
		f, err := r.w.cfg.JS.PublishMsgAsync(m)
		if err != nil {
			r.log.Error().Err(err).Uint64("seq", rec.Seq).Msg("publishing dead letter")
			continue
		}
		futures = append(futures, pending{i, f})
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, p := range futures {
		select {
		case <-p.ack.Ok():
			ok[p.i] = true
			metrics.ExportDead.WithLabelValues(r.name, b.out[p.i].Reason).Inc()
			r.log.Warn().Str("subject", b.recs[p.i].Subject).Uint64("seq", b.recs[p.i].Seq).
				Str("reason", b.out[p.i].Reason).Msg("event dead-lettered")
		case err := <-p.ack.Err():
			r.log.Error().Err(err).Uint64("seq", b.recs[p.i].Seq).Msg("storing dead letter; will retry")
		case <-timeout.C:
			return
		}
	}
}

// abandon gives the batch back to JetStream for redelivery.
func (r *runner) abandon(b *batch) {
	n := 0
	for i, m := range b.msgs {
		if b.out[i].Status != logevent.Dropped {
			_ = m.Nak()
			n++
		}
	}
	r.log.Warn().Int("events", n).Msg("batch abandoned at shutdown; it will be redelivered")
}

// sleep waits the backoff of attempt; false when ctx ended first.
func (r *runner) sleep(ctx context.Context, attempt int) bool {
	d := r.w.cfg.RetryMin << min(attempt, 20)
	if d > r.w.cfg.RetryMax || d <= 0 {
		d = r.w.cfg.RetryMax
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryReason is the label of a retry: throttled, unavailable or the error's code.
func retryReason(err error) string {
	return string(events.CodeOf(err))
}
