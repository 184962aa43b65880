package export

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// Delivery: a batch's records go out in the sink's calls (one per log stream
// and per-call limit). Progress is kept per call: the records a successful
// call carried get their outcome and their messages are acked at once, so a
// retry resends only what no call accepted yet, and a long retry of one log
// stream cannot let another stream's accepted messages run out of AckWait and
// come back; keepAlive extends the AckWait of every message of a batch queued
// or in delivery. The sink classifies each failed call (internal/sink); the
// policy is here: backoff (retry.go), dead-lettering a refused call's
// records, and abandoning the batch at the stop deadline.

// flush delivers the batch, retrying what failed until it is delivered or the
// stop deadline passes; then it dead-letters, acks, naks and reports, and
// empties the batch.
func (r *runner) flush(b *batch) {
	if b.empty() {
		return
	}
	defer b.reset()
	start := time.Now()
	ok := r.deliver(b)
	r.alive.remove(b)
	if !ok {
		r.abandon(b)
		return
	}
	r.settle(b, start)
}

// deliver writes the batch's pending records until no call fails; false when
// the stop deadline passed first. Each attempt has its own deadline
// (CallTimeout, well under AckWait): a hung call ends as a retry, and only
// what no call accepted is sent again. An attempt that timed out without any
// call going through gets twice the deadline the next time, up to
// maxCallTimeouts × CallTimeout: a call that is merely slow (a starved CPU
// building a 10,000-entry request, a slow cloud) is not cut at the same point
// and resent forever. The keep-alive covers the messages meanwhile.
func (r *runner) deliver(b *batch) bool {
	ctx := r.flushCtx
	deadline := r.w.cfg.CallTimeout
	for attempt := 0; b.sent > 0; {
		if ctx.Err() != nil {
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, deadline)
		acked := 0
		var err error
		cr, reports := r.sink.(sink.CallReporter)
		if reports {
			// Each call's messages are acked as it returns, before the
			// next call of the batch goes out.
			err = cr.WriteEach(cctx, b.recs, b.out, func(idx []int) { acked += r.ackAccepted(b, idx) })
		} else {
			err = r.sink.Write(cctx, b.recs, b.out)
		}
		if !reports || err != nil {
			// Once per attempt: whatever the calls delivered and did not report.
			acked += r.ackAccepted(b, nil)
		}
		timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
		cancel()
		if acked > 0 {
			attempt = 0 // a call went through: the next one starts its own backoff
			r.health.delivered(r.w.cfg.Now())
		}
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if timedOut {
			err = events.Wrap(events.CodeTimeout, err, "sink call to %s exceeded its %s deadline", r.endpoint, deadline)
			if acked == 0 {
				deadline = min(2*deadline, maxCallTimeouts*r.w.cfg.CallTimeout)
			}
		}
		f := sink.Classify(err)
		if f.Class == sink.DeadLetter {
			if n := r.refuse(b, f); n > 0 {
				r.health.failed(r.w.cfg.Now(), err, r.endpoint, false)
				r.log.Warn().Str("endpoint", r.endpoint).Str("err", events.Detail(err)).Int("events", n).
					Msg("call refused; its events are dead-lettered")
				continue
			}
		}
		metrics.ExportRetries.WithLabelValues(r.name, retryReason(err)).Inc()
		r.health.failed(r.w.cfg.Now(), err, r.endpoint, true)
		if ok, suppressed := r.warn.allow(time.Now()); ok {
			_, cause := splitDetail(err)
			r.log.Warn().Str("endpoint", r.endpoint).Str("err", err.Error()).Str("cause", cause).
				Str("code", string(events.CodeOf(err))).Int("attempt", attempt+1).Str("class", f.Class.String()).
				Int("suppressed", suppressed).Msg("delivery failed; retrying")
		}
		if !sleep(ctx, r.retry.wait(attempt, f, r.w.cfg.AckWait/2)) {
			return false
		}
		attempt++
	}
	return true
}

// maxCallTimeouts bounds how far deliver stretches the deadline of an
// attempt that keeps timing out: 4 × CallTimeout (2 × AckWait by default,
// the keep-alive covering the messages).
const maxCallTimeouts = 4

// ackAccepted acks the messages of the records at idx (the records one call
// carried) that it delivered and returns how many; idx nil means every
// record of the batch (a sink that does not report its calls: once per
// attempt). Called as each call returns, it bounds what a worker killed
// right after a call can leave unacked (and deliver twice) to the calls in
// flight, and costs what the call carried, not the whole batch. (No flush
// waits for the server here: a blocking round trip between a batch's calls
// would spend their shared deadline; the client writes the acks out at once.)
func (r *runner) ackAccepted(b *batch, idx []int) int {
	n := 0
	var seqs []acc
	if !r.dd.off {
		seqs = make([]acc, 0, max(len(idx), 16)) // a call's worth, without regrowing
	}
	ack := func(i int) {
		if !b.acked[i] && b.out[i].Status == logevent.Delivered {
			if !r.dd.off {
				seqs = append(seqs, acc{b.recs[i].Seq, b.recs[i].Received.UnixNano()})
			}
			_ = r.w.cfg.ack(b.msgs[i])
			b.acked[i] = true
			n++
		}
	}
	if idx == nil {
		for i := range b.msgs {
			ack(i)
		}
	} else {
		for _, i := range idx {
			if i >= 0 && i < len(b.msgs) {
				ack(i)
			}
		}
	}
	r.dd.accepted(seqs) // the ledger and the peers (ledger.go)
	return n
}

// refuse dead-letters the still pending records of a call the cloud refused
// for good and returns how many.
func (r *runner) refuse(b *batch, f *sink.Failure) int {
	n := 0
	for _, i := range f.Records {
		if i >= 0 && i < len(b.out) && b.out[i].Status == logevent.Pending {
			// The sink's classified message only: never the cloud's raw text.
			b.out[i] = logevent.Outcome{Status: logevent.Dead, Reason: events.DeadRejected, Detail: f.Err.Error()}
			n++
		}
	}
	return n
}

// keepAlive keeps the messages of submitted batches alive: every period it
// sends InProgress for each message of a batch waiting for a flusher or being
// delivered, so neither a queue behind a slow sink nor a long call or retry
// lets them run out of AckWait and come back as duplicates. (InProgress on a
// message already acked does nothing.)
type keepAlive struct {
	mu        sync.Mutex
	batches   map[*batch]struct{}
	abandoned bool // by a stop past its deadline: nothing is kept alive any more
}

// abandon stops keeping anything alive, for good, and returns how many
// messages the batches still in delivery hold (acked ones included: a
// flusher may be setting them).
func (k *keepAlive) abandon() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.abandoned = true
	n := 0
	for b := range k.batches {
		n += len(b.msgs)
	}
	return n
}

func newKeepAlive() *keepAlive { return &keepAlive{batches: map[*batch]struct{}{}} }

// add starts keeping b's messages alive; b is no longer being filled.
func (k *keepAlive) add(b *batch) {
	k.mu.Lock()
	k.batches[b] = struct{}{}
	k.mu.Unlock()
}

// remove stops it, before b's messages are settled and b is reset.
func (k *keepAlive) remove(b *batch) {
	k.mu.Lock()
	delete(k.batches, b)
	k.mu.Unlock()
}

// run ticks every period until the returned stop is called.
func (k *keepAlive) run(period time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				k.tick()
			}
		}
	}()
	return func() { close(done); <-exited }
}

func (k *keepAlive) tick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.abandoned {
		return
	}
	for b := range k.batches {
		for _, m := range b.msgs {
			_ = m.InProgress()
		}
	}
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
	// Accepted records whose call did not report them (none with the sinks
	// here: deliver acks them all) are acked like the others, through the
	// ledger; what is left is not accepted.
	r.ackAccepted(b, nil)
	for i, m := range b.msgs {
		if b.acked[i] {
			continue
		}
		switch b.out[i].Status {
		case logevent.Dropped:
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
		if body, err := events.Marshal(ev); err == nil {
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
		body, err := events.Marshal(dl)
		if err != nil {
			continue
		}
		m := nats.NewMsg(subject)
		m.Data = body
		// Deduplicated by the dead-letter stream if the message is redelivered.
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d-%s", rec.Stream, rec.Seq, r.name))
		f, err := r.w.cfg.JS.PublishMsgAsync(m)
		if err != nil {
			r.log.Error().Str("err", events.Detail(err)).Uint64("seq", rec.Seq).Msg("publishing dead letter")
			continue
		}
		futures = append(futures, pending{i, f})
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, p := range futures {
		select {
		case <-r.flushCtx.Done():
			return
		case <-p.ack.Ok():
			ok[p.i] = true
			metrics.ExportDead.WithLabelValues(r.name, b.out[p.i].Reason).Inc()
			r.log.Warn().Str("subject", b.recs[p.i].Subject).Uint64("seq", b.recs[p.i].Seq).
				Str("reason", b.out[p.i].Reason).Msg("event dead-lettered")
		case err := <-p.ack.Err():
			r.log.Error().Str("err", events.Detail(err)).Uint64("seq", b.recs[p.i].Seq).Msg("storing dead letter; will retry")
		case <-timeout.C:
			return
		}
	}
}

// abandon gives the batch's unaccepted messages back to JetStream for redelivery.
func (r *runner) abandon(b *batch) {
	n := 0
	for i, m := range b.msgs {
		switch {
		case b.acked[i]:
		case b.out[i].Status == logevent.Dropped:
			_ = m.Ack() // filtered out (min_level): never to be sent, not worth a redelivery
		default:
			_ = m.Nak()
			n++
		}
	}
	if r.removed.Load() {
		r.log.Info().Int("events", n).Msg("export removed: its undelivered events were given back")
		return
	}
	r.log.Warn().Int("events", n).Msg("batch abandoned at shutdown; it will be redelivered")
}
