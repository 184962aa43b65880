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
// messages are mostly contiguous), each with the oldest and newest stored
// time of its messages (the server's timestamp, rising with the sequence),
// for a window of max(2×AckWait, 1 min) after a range was last extended; a
// range is extended only while it is younger than a quarter of the window,
// so expiry works per chunk. At most ledgerCap ranges are kept whatever the
// rate: past that the oldest are dropped (and counted), which only lets a
// duplicate through again.
//
// Safety: a sequence enters the ledger only when a sink call accepted it
// (ackAccepted), here or at a peer of the same export, stream incarnation
// (the stream's creation time) and consumer incarnation (its creation time),
// and a message is suppressed only when its sequence is in a range and its
// stored time within the range's. A stream deleted and created again, or an
// R1 stream that lost its last messages, reuses sequences; the message at a
// reused sequence was stored after everything the old range holds, so it is
// not suppressed, and ranges stored across such a gap do not merge. Besides,
// the ledger is reset when the consumer (re)appears with another incarnation
// at a session's start or, mid-session, in the status refresh
// (checkConsumer); a peer's ranges of another incarnation, or read before a
// reset (the ledger's generation), are ignored.
// A broadcast is decoded strictly (events.Decode, ExportAccepted.Validate);
// one that is malformed, names another export or incarnation, or is too big
// is ignored and counted, and so is a range ending far past the consumer's
// last known delivered sequence. Anyone allowed to publish on the subject can still
// make the workers ack without delivering the sequences it names, for the
// window: the sample NATS configuration (deploy/) lets only the workers
// publish there, and they already hold $JS.ACK.> and $JS.API.> (they can ack
// or delete anything in the stream), so the subject gives them no new power.

import (
	"cmp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

const (
	// ledgerCap bounds the spans one export's ledger keeps (about 50 bytes
	// each): past it the oldest are dropped.
	ledgerCap = 8192
	// minLedgerWindow is the shortest time an accepted sequence is remembered.
	minLedgerWindow = time.Minute
	// ledgerSweep is how often expired spans are dropped and the
	// connection is checked for a reconnect.
	ledgerSweep = time.Second
	// maxSeq bounds a sequence the ledger takes (so hi+1 cannot wrap); a
	// stream never gets near it.
	maxSeq = 1 << 62
	// mergeGap is the longest gap between the stored times of the last
	// message of a span and the first of the range that continues it for the
	// two to merge. A sequence reused after a stream was created again or
	// lost its last messages (a server restart) is stored after a longer
	// gap, so such ranges stay apart and each keeps its own stored times.
	mergeGap = 500 * time.Millisecond
)

// acc is one accepted message: its stream sequence and stored time (unix
// nanoseconds, the server's clock).
type acc struct {
	seq uint64
	ts  int64
}

// span is an inclusive range of accepted stream sequences whose messages
// were stored between tmin and tmax (unix nanoseconds); first is when it
// was started and at when it was last extended (unix nanoseconds).
type span struct {
	lo, hi     uint64
	tmin, tmax int64
	first, at  int64
}

// ledger is a bounded, time-windowed set of stream sequences with their
// stored times, as sorted, disjoint spans.
type ledger struct {
	mu      sync.RWMutex
	spans   []span
	window  time.Duration
	cap     int
	dropped int    // spans dropped past cap since the last take
	gen     uint64 // bumped by reset: adds of an older generation are dropped
}

func newLedger(window time.Duration, cap int) *ledger {
	return &ledger{window: window, cap: cap}
}

// valid reports whether s can be taken: sequences in [1, maxSeq], stored
// times positive and ordered.
func (s span) valid() bool {
	return s.lo != 0 && s.lo <= s.hi && s.hi <= maxSeq && s.tmin > 0 && s.tmin <= s.tmax
}

// add records [lo, hi], stored between tmin and tmax, as accepted at now.
func (l *ledger) add(lo, hi uint64, tmin, tmax int64, now time.Time) {
	l.addAll(l.generation(), []span{{lo: lo, hi: hi, tmin: tmin, tmax: tmax}}, now)
}

// generation is the ledger's current generation, for addAll.
func (l *ledger) generation() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.gen
}

// addAll records the ranges rs (lo, hi, tmin, tmax; any order) as accepted
// at now, in one sorted merge with the spans, unless the ledger was reset
// since generation gen was read. Where a range overlaps a span and their
// stored times are disjoint, the sequences were reused: the older (by
// stored time) goes. It reports whether the ranges were taken.
func (l *ledger) addAll(gen uint64, rs []span, now time.Time) bool {
	at := now.UnixNano()
	in := make([]span, 0, len(rs))
	for _, r := range rs {
		if r.valid() {
			r.first, r.at = at, at
			in = append(in, r)
		}
	}
	slices.SortFunc(in, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	recent := at - int64(l.window/4)
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return false
	}
	if len(in) == 0 {
		return true
	}
	old := l.spans
	n := len(old)
	// The usual case: one range at or past the end that does not touch it.
	if len(in) == 1 && (n == 0 || in[0].lo > old[n-1].hi+1) {
		l.spans = append(l.spans, in[0])
		l.capLocked()
		return true
	}
	// Spans before the first range's reach and after the last's are kept
	// as they are; those between are merged with the ranges.
	hi := in[0].hi
	for _, r := range in {
		hi = max(hi, r.hi)
	}
	k := sort.Search(n, func(i int) bool { return old[i].hi+1 >= in[0].lo })
	e := sort.Search(n, func(i int) bool { return old[i].lo > hi+1 })
	mid := make([]span, 0, e-k+len(in))
	i, j := k, 0
	for i < e || j < len(in) {
		var s span
		if j == len(in) || (i < e && old[i].lo <= in[j].lo) {
			s, i = old[i], i+1
		} else {
			s, j = in[j], j+1
		}
		mid = pushSpan(mid, s, recent)
	}
	l.spans = slices.Replace(l.spans, k, e, mid...)
	l.capLocked()
	return true
}

// pushSpan appends s, whose lo is at or past every lo in out, merging it
// with out's last span where they overlap or touch.
func pushSpan(out []span, s span, recent int64) []span {
	for len(out) > 0 {
		t := &out[len(out)-1]
		if s.lo > t.hi+1 {
			break
		}
		if s.lo > t.hi { // touching: s continues t
			if t.first >= recent && s.first >= recent && t.tmax <= s.tmin && s.tmin-t.tmax <= int64(mergeGap) {
				t.hi, t.tmax = s.hi, s.tmax
				t.first, t.at = min(t.first, s.first), max(t.at, s.at)
				return out
			}
			break
		}
		// Overlapping: the same messages have the same stored times.
		switch {
		case s.tmin > t.tmax: // s's sequences were stored after t's: t's were reused
			out = out[:len(out)-1]
			continue
		case t.tmin > s.tmax: // s is the older
			return out
		}
		t.hi = max(t.hi, s.hi)
		t.tmin, t.tmax = min(t.tmin, s.tmin), max(t.tmax, s.tmax)
		t.first, t.at = min(t.first, s.first), max(t.at, s.at)
		return out
	}
	return append(out, s)
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

// contains reports whether the message at seq, stored at ts (unix
// nanoseconds), was accepted within the window before now: seq is in a span
// and ts within the stored times of the span's messages (a message at a
// reused sequence was stored after them).
func (l *ledger) contains(seq uint64, ts int64, now time.Time) bool {
	at, ok := l.find(seq, ts)
	return ok && l.recent(at, now)
}

// find reports whether seq is in a span and ts within the stored times of
// the span's messages, and when the span was last extended (at, unix ns),
// whatever the window.
func (l *ledger) find(seq uint64, ts int64) (at int64, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := len(l.spans)
	if n == 0 || seq < l.spans[0].lo || seq > l.spans[n-1].hi {
		return 0, false
	}
	i := sort.Search(n, func(k int) bool { return l.spans[k].hi >= seq })
	if i == n {
		return 0, false
	}
	s := l.spans[i]
	return s.at, s.lo <= seq && s.tmin <= ts && ts <= s.tmax
}

// recent reports whether a span last extended at at is within the window
// before now.
func (l *ledger) recent(at int64, now time.Time) bool { return now.UnixNano()-at <= int64(l.window) }

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

// reset forgets everything and starts a new generation: an add of the
// previous one (a late callback) is dropped.
func (l *ledger) reset() {
	l.mu.Lock()
	l.spans, l.dropped = nil, 0
	l.gen++
	l.mu.Unlock()
}

// snapshot is a copy of the spans.
func (l *ledger) snapshot() []span {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.spans)
}

// len is the number of spans, for tests.
func (l *ledger) len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.spans)
}

// toSpans turns accepted messages (any order, seq 0 skipped) into sorted
// ranges of consecutive sequences with the stored times of their messages.
// A sequence whose stored time goes back from its predecessor's starts a new
// range (the stored times rise with the sequence within one stream).
func toSpans(as []acc) []span {
	slices.SortFunc(as, func(a, b acc) int { return cmp.Compare(a.seq, b.seq) })
	var out []span
	for _, a := range as {
		if a.seq == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && a.seq <= out[k].hi+1 && a.ts >= out[k].tmax {
			out[k].hi = max(out[k].hi, a.seq)
			out[k].tmax = a.ts
			continue
		}
		out = append(out, span{lo: a.seq, hi: a.seq, tmin: a.ts, tmax: a.ts})
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
	ignoredAhead       = "ahead_of_consumer"
)

// aheadSlack is how far past the consumer's last known delivered sequence a
// peer's range may end (the consumer delivers on between two reads of its
// info): beyond, the range names messages never delivered and is ignored.
const aheadSlack = 1 << 20

// dedupe is a runner's redelivery suppression: its ledger, the subscription
// to its peers' broadcasts and the republication of its own on reconnect.
type dedupe struct {
	r   *runner
	id  string  // this runner's id in its broadcasts: another runner of the same worker is a peer
	led *ledger // own and peers' accepted sequences: what is suppressed
	own *ledger // own only: what is broadcast again (peers' ranges are theirs to repeat, and would never expire)
	off bool    // Config.noSuppress: record nothing, suppress nothing (tests)

	mu     sync.Mutex
	inc    incarnation // of the running session; zero before the first
	stopFn func()      // ends the running session's subscription and sweep (idempotent)
	ok     atomic.Bool // inc is known: broadcasts can be sent and taken
	closed atomic.Bool // the runner was abandoned (close): nothing is recorded or sent any more

	delivered atomic.Uint64 // the consumer's Delivered.Stream as last read (health.go); 0: unknown

	logs                          warnLimiter // rate-limits the suppression log
	mSuppressed, mCapped, mIgnMal prometheus.Counter
	mIgnExport, mIgnInc, mIgnAhd  prometheus.Counter
}

func newDedupe(r *runner) *dedupe {
	ig := func(reason string) prometheus.Counter {
		return metrics.ExportAcceptedIgnored.WithLabelValues(r.name, reason)
	}
	window := max(2*r.w.cfg.AckWait, minLedgerWindow)
	return &dedupe{
		r: r, id: nuid.Next(), off: r.w.cfg.noSuppress,
		led:         newLedger(window, ledgerCap),
		own:         newLedger(window, ledgerCap),
		logs:        warnLimiter{every: r.w.cfg.WarnEvery},
		mSuppressed: metrics.ExportRedeliveriesSuppressed.WithLabelValues(r.name),
		mCapped:     metrics.ExportLedgerDropped.WithLabelValues(r.name),
		mIgnMal:     ig(ignoredMalformed), mIgnExport: ig(ignoredExport), mIgnInc: ig(ignoredIncarnation),
		mIgnAhd: ig(ignoredAhead),
	}
}

// start begins a session on cons: it learns the incarnation (resetting the
// ledger when it changed), subscribes to the peers' broadcasts and sweeps the
// ledger; the returned stop ends both (as close does). An error leaves
// suppression off for the session (nothing is suppressed, as before it
// existed).
func (d *dedupe) start(cons jetstream.Consumer, stream string) (stop func()) {
	if d.off || d.closed.Load() {
		return func() {}
	}
	w := d.r.w
	ctx := d.r.fetchCtx
	ci := cons.CachedInfo()
	inc := incarnation{stream: stream, consumerCreated: ci.Created}
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
	d.delivered.Store(ci.Delivered.Stream)
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
				d.publish(d.own.snapshot())
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			d.ok.Store(false)
			if sub != nil {
				_ = sub.Unsubscribe()
			}
			close(done)
			<-exited
		})
	}
	d.mu.Lock()
	d.stopFn = stop
	d.mu.Unlock()
	if d.closed.Load() { // closed while starting
		stop()
	}
	return stop
}

// close ends suppression for good when the runner is abandoned (runner.stop:
// a sink call outlived the stop deadline, so the session has not returned):
// the subscription, the sweep and the re-broadcasts stop now, and a late
// success is neither recorded nor broadcast. Idempotent.
func (d *dedupe) close() {
	d.closed.Store(true)
	d.ok.Store(false)
	d.mu.Lock()
	stop := d.stopFn
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// checkConsumer compares the consumer's creation time, read by the status
// refresh, with the session's: a consumer deleted and created again (by a
// peer, after the stream was created again) while this session reads it
// through the same durable name restarts or replays the sequences, so the
// ledger is reset and suppression stays off for the rest of the session
// (the next one learns the new incarnation). delivered is the consumer's
// Delivered.Stream, the bound of the peers' ranges.
func (d *dedupe) checkConsumer(created time.Time, delivered uint64) {
	if d.off || !d.ok.Load() {
		return
	}
	d.delivered.Store(delivered)
	d.mu.Lock()
	defer d.mu.Unlock()
	if created.Equal(d.inc.consumerCreated) {
		return
	}
	d.ok.Store(false)
	d.led.reset()
	d.own.reset()
	d.r.log.Warn().Time("consumer_created", created).Time("session_consumer_created", d.inc.consumerCreated).
		Msg("the export's consumer was created again during the session: redelivery ledger reset, suppression off until the next session")
}

// accepted records the accepted messages of a sink call and broadcasts
// their ranges to the export's other workers.
func (d *dedupe) accepted(as []acc) {
	if d.off || len(as) == 0 || !d.ok.Load() || d.closed.Load() {
		return
	}
	gen := d.led.generation()
	rs := toSpans(as)
	now := time.Now()
	if !d.led.addAll(gen, rs, now) {
		return // reset since: of another incarnation
	}
	d.own.addAll(d.own.generation(), rs, now)
	d.publish(rs)
}

// publish broadcasts spans, in messages of at most MaxAcceptedRanges.
func (d *dedupe) publish(ss []span) {
	if d.closed.Load() {
		return
	}
	d.mu.Lock()
	inc := d.inc
	d.mu.Unlock()
	w := d.r.w
	for len(ss) > 0 {
		n := min(len(ss), events.MaxAcceptedRanges)
		a := events.ExportAccepted{Export: d.r.name, Worker: w.instance, Runner: d.id, Stream: inc.stream,
			StreamCreated: inc.streamCreated, ConsumerCreated: inc.consumerCreated,
			Ranges: make([][]uint64, n), Stored: make([][]int64, n)}
		for i, s := range ss[:n] {
			a.Ranges[i] = []uint64{s.lo, s.hi}
			a.Stored[i] = []int64{s.tmin, s.tmax}
		}
		if body, err := events.Marshal(a); err == nil {
			_ = w.cfg.NC.Publish(w.cfg.Subjects.Accepted(d.r.name), body)
		}
		ss = ss[n:]
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
	if a.Worker == d.r.w.instance && a.Runner == d.id {
		return // its own, already in the ledger
	}
	if a.Export != d.r.name || m.Subject != d.r.w.cfg.Subjects.Accepted(d.r.name) {
		d.mIgnExport.Inc()
		return
	}
	d.mu.Lock()
	inc, gen := d.inc, d.led.generation()
	d.mu.Unlock()
	if !d.ok.Load() || !inc.equal(incarnation{a.Stream, a.StreamCreated, a.ConsumerCreated}) {
		d.mIgnInc.Inc()
		return
	}
	limit := d.delivered.Load()
	rs := make([]span, 0, len(a.Ranges))
	for i, r := range a.Ranges {
		if limit > 0 && r[1] > limit+aheadSlack {
			d.mIgnAhd.Inc()
			continue
		}
		rs = append(rs, span{lo: r[0], hi: r[1], tmin: a.Stored[i][0], tmax: a.Stored[i][1]})
	}
	if !d.led.addAll(gen, rs, time.Now()) {
		d.mIgnInc.Inc() // the ledger was reset since: of another incarnation
	}
}

// suppress reports whether the message at stream sequence seq, stored at
// stored, was already accepted by a sink call; if so it acks it, counts and
// logs it (rate-limited).
func (d *dedupe) suppress(msg jetstream.Msg, seq uint64, stored time.Time) bool {
	if d.off || seq == 0 {
		return false
	}
	// The clock is read only for a sequence found (contains, without
	// time.Now per message: most are past every span).
	if at, ok := d.led.find(seq, stored.UnixNano()); !ok || !d.led.recent(at, time.Now()) {
		return false
	}
	_ = d.r.w.cfg.ack(msg)
	d.mSuppressed.Inc()
	if ok, n := d.logs.allow(time.Now()); ok {
		d.r.log.Info().Uint64("seq", seq).Int("suppressed", n).Msg("redelivery of an accepted event suppressed (acked, not delivered again)")
	}
	return true
}
