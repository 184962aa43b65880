package export

// Redelivery suppression. JetStream redelivers a message whose ack it did not
// keep: when the node leading an export's consumer dies, the acks it had
// received but not yet replicated are lost, and the new leader hands those
// messages out again after AckWait, to any worker of the export, sometimes
// with NumDelivered 1. Every worker therefore keeps a ledger of the stream
// sequences a sink call of the export accepted recently (its own and, by the
// broadcast on events.Subjects.Accepted, its peers'), and a message found in
// it is acked instead of delivered a second time.
//
// Core NATS drops what a disconnected or not yet started worker would have
// received, so each worker also broadcasts its own recent ranges again every
// third of the ack wait and at once after a reconnect: a redelivery comes an
// ack wait after the lost acks, by when every connected peer has heard.
//
// The ledger holds merged ranges, not one entry per message (a fetch's
// messages are mostly contiguous), for a window of max(2×AckWait, 1 min),
// and at most ledgerCap ranges whatever the rate: past that the oldest are
// dropped (and counted), which only lets a duplicate through again.
//
// Safety: a sequence enters the ledger only when a sink call accepted it
// (ackAccepted), here or at a peer of the same export, stream incarnation
// (the stream's creation time) and consumer incarnation (its creation time):
// a stream or consumer deleted and created again restarts or replays the
// sequences, so the ledger is reset when the consumer (re)appears with
// another incarnation and a peer's ranges of another incarnation are ignored.
// A broadcast is decoded strictly (events.Decode, ExportAccepted.Validate);
// one that is malformed, names another export or incarnation, or is too big
// is ignored and counted. Anyone allowed to publish on the subject can still
// make the workers ack without delivering the sequences it names, for the
// window: the sample NATS configuration (deploy/) lets only the workers
// publish there, and they already hold $JS.ACK.> and $JS.API.> (they can ack
// or delete anything in the stream), so the subject gives them no new power.

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

const (
	// ledgerCap bounds the ranges one export's ledger keeps (about 40 bytes
	// each): past it the oldest are dropped.
	ledgerCap = 8192
	// minLedgerWindow is the shortest time an accepted sequence is remembered.
	minLedgerWindow = time.Minute
	// ledgerSweep is how often expired ranges are dropped and the
	// connection is checked for a reconnect.
	ledgerSweep = time.Second
	// maxSeq bounds a sequence the ledger takes (so hi+1 cannot wrap); a
	// stream never gets near it.
	maxSeq = 1 << 62
)

// span is an inclusive range of accepted stream sequences; at is when it was
// last extended (unix nanoseconds).
type span struct {
	lo, hi uint64
	at     int64
}

// ledger is a bounded, time-windowed set of stream sequences, as sorted,
// disjoint, non-adjacent spans.
type ledger struct {
	mu      sync.RWMutex
	spans   []span
	window  time.Duration
	cap     int
	dropped int // spans dropped past cap since the last take
}

func newLedger(window time.Duration, cap int) *ledger {
	return &ledger{window: window, cap: cap}
}

// add records [lo, hi] as accepted at now, merging it with the spans it
// overlaps or touches.
func (l *ledger) add(lo, hi uint64, now time.Time) {
	if lo == 0 || lo > hi || hi > maxSeq {
		return
	}
	at := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.spans)
	// The usual case: at or past the end.
	if n == 0 || lo > l.spans[n-1].hi+1 {
		l.spans = append(l.spans, span{lo, hi, at})
		l.capLocked()
		return
	}
	// i: the first span that ends at or after lo-1; j: the first that
	// starts after hi+1. Spans [i, j) merge with [lo, hi].
	i := sort.Search(n, func(k int) bool { return l.spans[k].hi+1 >= lo })
	j := sort.Search(n, func(k int) bool { return l.spans[k].lo > hi+1 })
	if i == j {
		l.spans = slices.Insert(l.spans, i, span{lo, hi, at})
		l.capLocked()
		return
	}
	m := span{min(lo, l.spans[i].lo), max(hi, l.spans[j-1].hi), at}
	l.spans = slices.Replace(l.spans, i, j, m)
}

// capLocked drops the oldest spans (by when they were last extended) down
// to 7/8 of the cap once the cap is passed: one sort per cap/8 new spans.
func (l *ledger) capLocked() {
	if len(l.spans) <= l.cap {
		return
	}
	drop := len(l.spans) - l.cap*7/8
	ats := make([]int64, len(l.spans))
	for i, s := range l.spans {
		ats[i] = s.at
	}
	slices.Sort(ats)
	limit := ats[drop-1]
	atLimit := 0 // how many spans of time limit to drop
	for _, a := range ats[:drop] {
		if a == limit {
			atLimit++
		}
	}
	kept := l.spans[:0]
	for _, s := range l.spans {
		if s.at < limit || (s.at == limit && atLimit > 0) {
			if s.at == limit {
				atLimit--
			}
			l.dropped++
			continue
		}
		kept = append(kept, s)
	}
	clear(l.spans[len(kept):])
	l.spans = kept
}

// contains reports whether seq was accepted within the window before now.
func (l *ledger) contains(seq uint64, now time.Time) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := len(l.spans)
	if n == 0 || seq < l.spans[0].lo || seq > l.spans[n-1].hi {
		return false
	}
	i := sort.Search(n, func(k int) bool { return l.spans[k].hi >= seq })
	return i < n && l.spans[i].lo <= seq && now.UnixNano()-l.spans[i].at <= int64(l.window)
}

// sweep drops the spans older than the window and returns how many spans
// were dropped past the cap since the last sweep.
func (l *ledger) sweep(now time.Time) (capped int) {
	cut := now.UnixNano() - int64(l.window)
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.spans[:0]
	for _, s := range l.spans {
		if s.at >= cut {
			kept = append(kept, s)
		}
	}
	clear(l.spans[len(kept):])
	l.spans = kept
	capped, l.dropped = l.dropped, 0
	return capped
}

// reset forgets everything.
func (l *ledger) reset() {
	l.mu.Lock()
	l.spans, l.dropped = nil, 0
	l.mu.Unlock()
}

// ranges is a copy of the spans as [first, last] pairs.
func (l *ledger) ranges() [][]uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([][]uint64, len(l.spans))
	for i, s := range l.spans {
		out[i] = []uint64{s.lo, s.hi}
	}
	return out
}

// len is the number of spans, for tests.
func (l *ledger) len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.spans)
}

// toRanges turns sequences (any order, 0s skipped) into sorted inclusive ranges.
func toRanges(seqs []uint64) [][]uint64 {
	slices.Sort(seqs)
	var out [][]uint64
	for _, s := range seqs {
		if s == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && s <= out[k][1]+1 {
			out[k][1] = max(out[k][1], s)
			continue
		}
		out = append(out, []uint64{s, s})
	}
	return out
}

// incarnation names one life of the stream and of the export's consumer.
type incarnation struct {
	stream          string
	streamCreated   time.Time
	consumerCreated time.Time
}

func (a incarnation) equal(b incarnation) bool {
	return a.stream == b.stream && a.streamCreated.Equal(b.streamCreated) && a.consumerCreated.Equal(b.consumerCreated)
}

// Reasons a broadcast is ignored (label of cloudbridge_export_accepted_ignored_total).
const (
	ignoredMalformed   = "malformed"
	ignoredExport      = "other_export"
	ignoredIncarnation = "other_incarnation"
)

// dedupe is a runner's redelivery suppression: its ledger, the subscription
// to its peers' broadcasts and the republication of its own on reconnect.
type dedupe struct {
	r   *runner
	led *ledger // own and peers' accepted sequences: what is suppressed
	own *ledger // own only: what is broadcast again (peers' ranges are theirs to repeat, and would never expire)
	off bool    // Config.noSuppress: record nothing, suppress nothing (tests)

	mu  sync.Mutex
	inc incarnation // of the running session; zero before the first
	ok  atomic.Bool // inc is known: broadcasts can be sent and taken

	logs                          warnLimiter // rate-limits the suppression log
	mSuppressed, mCapped, mIgnMal prometheus.Counter
	mIgnExport, mIgnInc           prometheus.Counter
}

func newDedupe(r *runner) *dedupe {
	ig := func(reason string) prometheus.Counter {
		return metrics.ExportAcceptedIgnored.WithLabelValues(r.name, reason)
	}
	window := max(2*r.w.cfg.AckWait, minLedgerWindow)
	return &dedupe{
		r: r, off: r.w.cfg.noSuppress,
		led:         newLedger(window, ledgerCap),
		own:         newLedger(window, ledgerCap),
		logs:        warnLimiter{every: r.w.cfg.WarnEvery},
		mSuppressed: metrics.ExportRedeliveriesSuppressed.WithLabelValues(r.name),
		mCapped:     metrics.ExportLedgerDropped.WithLabelValues(r.name),
		mIgnMal:     ig(ignoredMalformed), mIgnExport: ig(ignoredExport), mIgnInc: ig(ignoredIncarnation),
	}
}

// start begins a session on cons: it learns the incarnation (resetting the
// ledger when it changed), subscribes to the peers' broadcasts and sweeps the
// ledger; the returned stop ends both. An error leaves suppression off for
// the session (nothing is suppressed, as before it existed).
func (d *dedupe) start(cons jetstream.Consumer, stream string) (stop func()) {
	if d.off {
		return func() {}
	}
	w := d.r.w
	ctx := d.r.fetchCtx
	inc := incarnation{stream: stream, consumerCreated: cons.CachedInfo().Created}
	d.mu.Lock()
	prev := d.inc
	d.mu.Unlock()
	if s, err := w.cfg.JS.Stream(ctx, stream); err == nil {
		inc.streamCreated = s.CachedInfo().Created
	} else if prev.stream == stream && prev.consumerCreated.Equal(inc.consumerCreated) {
		// Most likely mid-election: the same consumer lives in the same
		// stream (a stream created again has new consumers).
		inc.streamCreated = prev.streamCreated
	} else {
		d.r.log.Warn().Str("err", events.Detail(err)).Msg("redelivery suppression off for this session: reading the stream's info")
		return func() {}
	}
	d.mu.Lock()
	if !d.inc.equal(inc) {
		d.led.reset()
		d.own.reset()
		d.inc = inc
	}
	d.mu.Unlock()
	d.ok.Store(true)
	sub, err := w.cfg.NC.Subscribe(w.cfg.Subjects.Accepted(d.r.name), d.receive)
	if err != nil {
		d.r.log.Warn().Str("err", events.Detail(err)).Msg("subscribing to the peers' accepted broadcasts")
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(ledgerSweep)
		defer t.Stop()
		reconnects := w.cfg.NC.Stats().Reconnects
		every := max(w.cfg.AckWait/3, ledgerSweep)
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			now := time.Now()
			if n := d.led.sweep(now); n > 0 {
				d.mCapped.Add(float64(n))
			}
			d.own.sweep(now)
			// Broadcasts published while the connection was down died with
			// it (and those before it, with the node it was on), and a peer
			// that was cut off or not yet started missed them: tell the
			// peers again, after a reconnect and every third of the ack wait.
			rc := w.cfg.NC.Stats().Reconnects
			if (rc != reconnects || now.Sub(last) >= every) && w.cfg.NC.IsConnected() {
				reconnects, last = rc, now
				d.publish(d.own.ranges())
			}
		}
	}()
	return func() {
		d.ok.Store(false)
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		close(done)
		<-exited
	}
}

// accepted records the stream sequences a sink call accepted and broadcasts
// them to the export's other workers.
func (d *dedupe) accepted(seqs []uint64) {
	if d.off || len(seqs) == 0 || !d.ok.Load() {
		return
	}
	rs := toRanges(seqs)
	now := time.Now()
	for _, r := range rs {
		d.led.add(r[0], r[1], now)
		d.own.add(r[0], r[1], now)
	}
	d.publish(rs)
}

// publish broadcasts ranges, in messages of at most MaxAcceptedRanges.
func (d *dedupe) publish(rs [][]uint64) {
	d.mu.Lock()
	inc := d.inc
	d.mu.Unlock()
	w := d.r.w
	for len(rs) > 0 {
		n := min(len(rs), events.MaxAcceptedRanges)
		body, err := events.Marshal(events.ExportAccepted{Export: d.r.name, Worker: w.instance, Stream: inc.stream,
			StreamCreated: inc.streamCreated, ConsumerCreated: inc.consumerCreated, Ranges: rs[:n]})
		if err == nil {
			_ = w.cfg.NC.Publish(w.cfg.Subjects.Accepted(d.r.name), body)
		}
		rs = rs[n:]
	}
}

// receive merges a peer's broadcast; anything not exactly of this export and
// incarnation is ignored and counted.
func (d *dedupe) receive(m *nats.Msg) {
	var a events.ExportAccepted
	if err := events.Decode(m.Data, &a); err != nil || a.Validate() != nil {
		d.mIgnMal.Inc()
		return
	}
	if a.Worker == d.r.w.instance {
		return // its own, already in the ledger
	}
	if a.Export != d.r.name || m.Subject != d.r.w.cfg.Subjects.Accepted(d.r.name) {
		d.mIgnExport.Inc()
		return
	}
	d.mu.Lock()
	inc := d.inc
	d.mu.Unlock()
	if !d.ok.Load() || !inc.equal(incarnation{a.Stream, a.StreamCreated, a.ConsumerCreated}) {
		d.mIgnInc.Inc()
		return
	}
	now := time.Now()
	for _, r := range a.Ranges {
		d.led.add(r[0], r[1], now)
	}
}

// suppress reports whether the message at stream sequence seq was already
// accepted by a sink call; if so it acks it, counts and logs it (rate-limited).
func (d *dedupe) suppress(msg jetstream.Msg, seq uint64) bool {
	if d.off || seq == 0 || !d.led.contains(seq, time.Now()) {
		return false
	}
	_ = d.r.w.cfg.ack(msg)
	d.mSuppressed.Inc()
	if ok, n := d.logs.allow(time.Now()); ok {
		d.r.log.Info().Uint64("seq", seq).Int("suppressed", n).Msg("redelivery of an accepted event suppressed (acked, not delivered again)")
	}
	return true
}
