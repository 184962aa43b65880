package export

import (
	"context"
	"errors"
	"math"
	"strings"
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

// collector pulls messages into batches and submits them at max_events,
// max_bytes or max_wait. It asks JetStream only for what the batch being
// filled has room for, and only once that batch has a slot (the pipeline's
// free batches): every message this worker holds is in a batch being filled,
// waiting for a flusher or being delivered, and all of those are kept alive
// with InProgress; nothing waits unseen in a client-side buffer behind a slow
// sink, where its AckWait would run out and another worker would deliver it
// a second time. What JetStream has not handed out stays available to the
// other workers sharing the export.
//
// While a pull for a backlog fills b, the pull for the next batch goes out
// at once (ahead), if one of the pipeline's batches is free to take it
// (spare): JetStream then gathers the next batch's messages while this one
// is parsed and handed over, instead of the collector waiting a round trip
// and the server's first message at every batch. It only ever pulls into
// batches it holds, so memory stays bounded by the batches; behind a slow
// sink no batch is free and there is no pull ahead.
type collector struct {
	r    *runner
	p    *pipeline
	cons jetstream.Consumer
	pull *puller // cons's pull requests (pull.go)

	b          *batch     // being filled; nil while every batch is busy
	opened     time.Time  // when b got its first message
	touched    time.Time  // last InProgress for b's messages and carry
	carry      []prepared // fetched past b's limits: the start of the next batch
	spareCarry []prepared // carry's other backing array, swapped at each submit (no regrowing)
	avg        int        // running mean of a message's size for the sink, to size fetches
	failing    int        // consecutive failed fetches, for backoff

	spare *batch     // a free batch taken for the pull ahead; the next b
	ahead *pullBatch // a pull of what is there now, issued while b fills

	// dead holds the messages of a fetch that can never be sent (prepare
	// marked them Dead): they are dead-lettered and acked as the fetch ends
	// (settleDead), not in b behind its sink calls, which a failing sink
	// would hold for as long as it fails.
	dead batch
}

// prepared is a fetched message with its parsed record.
type prepared struct {
	msg  jetstream.Msg
	rec  logevent.Record
	out  logevent.Outcome
	size int
}

// idlePoll bounds a fetch while the export has nothing to send; a batch
// closer than minFetchWait to its max_wait is submitted without another fetch.
const (
	idlePoll     = 5 * time.Second
	minFetchWait = 5 * time.Millisecond
)

// run fills and submits batches until ctx ends or the consumer is gone; then
// it submits what it holds and waits for the flushers.
func (c *collector) run(ctx context.Context) error {
	defer c.finish()
	c.b = c.p.next()
	c.touched = time.Now()
	alive := c.r.w.cfg.AckWait / 3
	for ctx.Err() == nil {
		now := time.Now()
		if now.Sub(c.touched) >= alive {
			c.touch()
		}
		if c.b.empty() {
			// What is there now, at once (a backlog fills the batch in one
			// request); else wait for one message: a batch opens with it.
			if err := c.fetch(ctx, c.room(), 0); err != nil {
				return err
			}
			if c.b.empty() && len(c.carry) == 0 && ctx.Err() == nil {
				wait := min(idlePoll, c.touched.Add(alive).Sub(now))
				if err := c.fetch(ctx, 1, max(wait, minFetchWait)); err != nil {
					return err
				}
			}
		} else {
			wait := c.opened.Add(c.r.lim.maxWait).Sub(now)
			if wait < minFetchWait {
				if !c.submit(ctx) {
					return nil
				}
				continue
			}
			wait = min(wait, c.touched.Add(alive).Sub(now))
			if err := c.fetch(ctx, c.room(), max(wait, minFetchWait)); err != nil {
				return err
			}
		}
		if c.full() || len(c.carry) > 0 {
			if !c.submit(ctx) {
				return nil
			}
		}
	}
	return nil
}

// fetch pulls at most n (a pull request, pull.go), waiting up to wait for
// them (0: only what is there now), and adds it to b (or to carry past b's
// limits). A b that fills while the pull still brings messages is submitted
// at once when a batch is free to follow it (the carry starts that one), so
// a pull of more than a batch does not hold the first back until its last
// message. When ctx ends mid-fetch, what the fetch still brings is given
// back (nak) as it arrives.
//
// A pull ahead, when there is one, is taken instead (it asked for what is
// there now, for an empty batch; what b cannot take is carried). A pull of
// what is there now that brought a message sends the next one ahead as it
// ends.
func (c *collector) fetch(ctx context.Context, n int, wait time.Duration) error {
	defer c.settleDead()
	var mb *pullBatch
	var err error
	if c.ahead != nil {
		mb, c.ahead = c.ahead, nil
	} else {
		mb, err = c.pull.fetch(n, wait)
	}
	if err != nil {
		return c.fetchFailed(ctx, err)
	}
	got := 0
	stop := ctx.Done()
	for {
		// What is received already is taken without waiting (a
		// non-blocking look at stop per message).
		msg, stopped := mb.next(stop)
		if stopped {
			c.giveBack(mb, msg)
			return nil
		}
		if msg == nil {
			break
		}
		got++
		c.add(c.r.prepare(msg))
		// A full b goes out at once, while the pull still brings the
		// next batch's messages (a first pull asks for max_events, before
		// a message's size is known), when a batch is free to follow it:
		// submit does not wait then.
		if len(c.carry) == 1 && c.takeFree() && !c.submit(ctx) {
			c.giveBack(mb, nil)
			return nil
		}
	}
	if err := mb.Error(); err != nil && got == 0 {
		return c.fetchFailed(ctx, err)
	}
	c.failing = 0
	if got > 0 && wait == 0 {
		// A backlog: the next batch's worth, once this pull is complete.
		// (While two pulls wait, the server hands their messages out in
		// turn: each batch would get every other sequence, the ledger a
		// range per message, and the first batch would fill at half the rate.)
		c.pullAhead()
	}
	return nil
}

// pullAhead issues the pull for the next batch, if a batch is free for it.
func (c *collector) pullAhead() {
	if c.ahead != nil {
		return
	}
	if c.spare == nil {
		select {
		case c.spare = <-c.p.free:
		default:
			return
		}
	}
	mb, err := c.pull.fetch(c.roomIn(c.spare), 0)
	if err != nil {
		return // the next fetch pulls (and reports) as usual
	}
	c.ahead = mb
}

// giveBack gives back (nak) msg, when not nil, and what mb still brings, as
// it arrives, and what the pull ahead brings: ctx ended mid-fetch.
func (c *collector) giveBack(mb *pullBatch, msg jetstream.Msg) {
	go func() {
		if msg != nil {
			_ = msg.Nak()
		}
		mb.drain(func(m jetstream.Msg) { _ = m.Nak() })
	}()
	c.dropAhead()
}

// takeFree reports whether a batch is free to follow b at once, taking it
// as spare (the batch submit puts in b's place) when none was taken yet.
func (c *collector) takeFree() bool {
	if c.spare != nil {
		return true
	}
	select {
	case c.spare = <-c.p.free:
		return true
	default:
		return false
	}
}

// dropAhead gives back what the pull ahead brings (nak), as it arrives.
func (c *collector) dropAhead() {
	if c.ahead == nil {
		return
	}
	mb := c.ahead
	c.ahead = nil
	go mb.drain(func(m jetstream.Msg) { _ = m.Nak() })
}

// fetchFailed: a deleted consumer, or five failures in a row, end the session
// (the consumer is created again); anything else (a leader election, a lost
// connection) is retried after a backoff.
func (c *collector) fetchFailed(ctx context.Context, err error) error {
	c.failing++
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || c.failing >= 5 {
		return err
	}
	c.r.log.Debug().Str("err", events.Detail(err)).Msg("fetch")
	c.touch()
	sleep(ctx, min(c.r.retry.delay(c.failing-1), c.r.w.cfg.AckWait/3))
	return nil
}

// room is how many messages to ask for: what b can still send, estimated in
// bytes from the mean size seen so far; at least one.
func (c *collector) room() int { return c.roomIn(c.b) }

func (c *collector) roomIn(b *batch) int {
	l := c.r.lim
	n := l.maxEvents - b.sent
	if c.avg > 0 {
		n = min(n, (l.maxBytes-b.bytes)/c.avg+1)
	}
	n = min(n, 4*l.maxEvents-len(b.msgs))
	return max(n, 1)
}

// add puts a prepared message into b, or into carry when b is full or the
// message would take it past max_bytes; one that can never be sent goes to
// dead instead.
func (c *collector) add(p prepared) {
	if p.msg == nil {
		return
	}
	if p.out.Status == logevent.Dead {
		c.dead.add(p.msg, p.rec, p.out, 0)
		return
	}
	if len(c.carry) > 0 || c.full() || (p.size > 0 && c.b.sent > 0 && c.b.bytes+p.size > c.r.lim.maxBytes) {
		c.carry = append(c.carry, p)
		return
	}
	if p.size > 0 {
		if c.avg == 0 {
			c.avg = p.size
		} else {
			c.avg += (p.size - c.avg) / 16
		}
	}
	if c.b.empty() {
		c.opened = time.Now()
	}
	c.b.add(p.msg, p.rec, p.out, p.size)
}

func (c *collector) full() bool {
	l := c.r.lim
	return c.b.sent >= l.maxEvents || c.b.bytes >= l.maxBytes || len(c.b.msgs) >= 4*l.maxEvents
}

// submit hands b to the flushers and waits for a free batch, keeping carry
// alive meanwhile; then carry goes into the new batch. False when ctx ended
// while waiting (carry was given back).
func (c *collector) submit(ctx context.Context) bool {
	c.p.submit(c.b)
	c.b, c.spare = c.spare, nil
	alive := time.NewTicker(c.r.w.cfg.AckWait / 3)
	defer alive.Stop()
	for c.b == nil {
		select {
		case c.b = <-c.p.free:
		case <-alive.C:
			c.touch()
		case <-ctx.Done():
			c.nakCarry()
			c.dropAhead()
			return false
		}
	}
	c.touched = time.Now()
	carry := c.carry
	c.carry = c.spareCarry[:0]
	for i, p := range carry {
		if c.full() || (p.size > 0 && c.b.sent > 0 && c.b.bytes+p.size > c.r.lim.maxBytes) {
			// More than a batch was carried: submit this one too.
			c.carry = append(c.carry, carry[i:]...)
			clear(carry)
			c.spareCarry = carry[:0]
			return c.submit(ctx)
		}
		c.add(p)
	}
	clear(carry)
	c.spareCarry = carry[:0]
	return true
}

// settleDead dead-letters what a fetch brought that can never be sent, acks
// what the dead-letter stream stored (counted in the metrics and reported
// like a batch's dead letters) and gives back the rest, after a delay (the
// stream is failing: no tight loop of redeliveries).
func (c *collector) settleDead() {
	d := &c.dead
	if d.empty() {
		return
	}
	defer d.reset()
	start := time.Now()
	idx := make([]int, len(d.msgs))
	for i := range idx {
		idx[i] = i
	}
	ok := c.r.deadLetter(d, idx)
	for i, m := range d.msgs {
		if ok[i] {
			_ = m.Ack()
		} else {
			_ = m.NakWithDelay(c.r.retry.max)
		}
	}
	if len(ok) == 0 {
		return
	}
	ev := events.ExportedEvent{Export: c.r.name, Dead: len(ok), DurationMS: time.Since(start).Milliseconds()}
	if body, err := events.Marshal(ev); err == nil {
		_ = c.r.w.cfg.NC.Publish(c.r.w.cfg.Subjects.Exported(c.r.name), body)
	}
}

// touch sends InProgress for b's messages and carry's.
func (c *collector) touch() {
	if c.b != nil {
		for _, m := range c.b.msgs {
			_ = m.InProgress()
		}
	}
	for _, p := range c.carry {
		_ = p.msg.InProgress()
	}
	c.touched = time.Now()
}

func (c *collector) nakCarry() {
	for _, p := range c.carry {
		_ = p.msg.Nak()
	}
	c.carry = nil
}

// finish submits what is held and waits for the flushers.
func (c *collector) finish() {
	if c.b != nil {
		c.p.submit(c.b)
		c.b = nil
	}
	// carry after a stop: the flushers are still delivering; give it back,
	// and what the pull ahead brings.
	c.nakCarry()
	c.dropAhead()
	if c.spare != nil {
		c.p.free <- c.spare
		c.spare = nil
	}
	c.p.close()
}

// pipeline overlaps filling batches with delivering others: batches in all,
// flushers of them in delivery at once.
type pipeline struct {
	r     *runner
	queue chan *batch
	free  chan *batch
	done  chan struct{}
}

// flushers is how many batches are delivered at once; two more are filled
// meanwhile (see batches). CloudWatch no longer orders calls by sequence token, and Cloud
// Logging deduplicates by insertId, so batches may go out side by side.
const flushers = 2

// batches is how many batches a runner has: one per flusher, the one being
// filled and the one a pull ahead fills next. Every message the worker holds
// is in one of them (the bound on its memory, whatever the backlog).
const batches = flushers + 2

func newPipeline(r *runner) *pipeline {
	p := &pipeline{r: r, queue: make(chan *batch, batches), free: make(chan *batch, batches), done: make(chan struct{})}
	for range batches {
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
// does not wait: a batch is only filled when one of the batches was free, so
// a flusher or the queue's room takes it.
func (p *pipeline) submit(b *batch) {
	if b.empty() {
		p.free <- b
		return
	}
	p.r.alive.add(b)
	p.queue <- b
}

// close waits for the flushers to finish.
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

// add appends a prepared message.
func (b *batch) add(msg jetstream.Msg, rec logevent.Record, o logevent.Outcome, size int) {
	b.msgs = append(b.msgs, msg)
	b.recs = append(b.recs, rec)
	b.out = append(b.out, o)
	b.acked = append(b.acked, false)
	b.bytes += size
	if o.Status == logevent.Pending {
		b.sent++
	}
}

// prepare parses msg: its record, its initial outcome (dead when empty,
// dropped below min_level) and its size for the sink (0 when not sent).
func (r *runner) prepare(msg jetstream.Msg) prepared {
	r.mIn.Inc()
	var received time.Time
	var seq uint64
	stream := r.w.cfg.LogsStream
	if st, sq, ts, ok := ackMeta(msg.Reply()); ok {
		received, seq, stream = time.Unix(0, ts), sq, st
		if r.dd.suppress(msg, seq, received) {
			return prepared{} // already accepted (ledger.go): acked; add skips it
		}
	} else if meta, err := msg.Metadata(); err == nil {
		received, seq, stream = meta.Timestamp, meta.Sequence.Stream, meta.Stream
		if r.dd.suppress(msg, seq, received) {
			return prepared{}
		}
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
	// Size through the interface would move rec to the heap (an allocation
	// per message): it reads the runner's copy instead (one collector per
	// runner calls prepare).
	r.sizing = rec
	size := r.sink.Size(&r.sizing)
	r.sizing = logevent.Record{}
	return prepared{msg, rec, logevent.Outcome{}, size}
}

// ackMeta reads what prepare needs of a message's metadata from its reply
// subject, the JetStream ack subject: the stream, the stream sequence and
// when the stream stored it (ns since the epoch). It is Metadata without its
// allocation, for the two forms the server sends:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>…]
//
// ok is false for anything else (a number that is not one, a subject of
// another shape): the caller then asks Metadata.
func ackMeta(reply string) (stream string, seq uint64, ts int64, ok bool) {
	rest, found := strings.CutPrefix(reply, "$JS.ACK.")
	if !found {
		return "", 0, 0, false
	}
	// The tokens after $JS.ACK: 7 (v1) or at least 9 (v2), the first 9 kept.
	var tok [9]string
	n := 0
	for more := true; more && n < len(tok); n++ {
		tok[n], rest, more = strings.Cut(rest, ".")
	}
	var st, sseq, tm string
	switch {
	case n == 7:
		st, sseq, tm = tok[0], tok[3], tok[5]
	case n == 9:
		st, sseq, tm = tok[2], tok[5], tok[7]
	default:
		return "", 0, 0, false
	}
	seq, ok1 := parseAckNum(sseq)
	t, ok2 := parseAckNum(tm)
	if st == "" || !ok1 || !ok2 || t > math.MaxInt64 {
		return "", 0, 0, false
	}
	return st, seq, int64(t), true
}

// parseAckNum reads a decimal number of 1 to 19 digits.
func parseAckNum(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
