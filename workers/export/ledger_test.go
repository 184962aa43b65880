package export

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func spansOf(l *ledger) string {
	var b strings.Builder
	for _, r := range l.ranges() {
		fmt.Fprintf(&b, "[%d,%d]", r[0], r[1])
	}
	return b.String()
}

// tsBase: in these tests the message at sequence s was stored at tsBase+s.
const tsBase = int64(1_795_000_000_000_000_000)

// addSeqs adds [lo, hi] stored as one stream stores them (tsBase+seq).
func addSeqs(l *ledger, lo, hi uint64, now time.Time) {
	l.add(lo, hi, tsBase+int64(lo), tsBase+int64(hi), now)
}

// has reports whether the ledger suppresses the message of one stream at seq.
func has(l *ledger, seq uint64, now time.Time) bool { return l.contains(seq, tsBase+int64(seq), now) }

func TestLedgerMerge(t *testing.T) {
	now := time.Now()
	l := newLedger(time.Minute, 100)
	for _, r := range [][2]uint64{{10, 20}, {30, 40}, {21, 25}, {50, 50}, {5, 9}, {27, 29}, {26, 26}, {45, 60}, {1, 1}, {3, 3}, {0, 7}, {9, 2}} {
		addSeqs(l, r[0], r[1], now)
	}
	if got, want := spansOf(l), "[1,1][3,3][5,40][45,60]"; got != want {
		t.Fatalf("spans %s, want %s", got, want)
	}
	addSeqs(l, 2, 100, now) // swallows all but [1,1], which it touches
	if got, want := spansOf(l), "[1,100]"; got != want {
		t.Fatalf("spans %s, want %s", got, want)
	}
	for seq, want := range map[uint64]bool{0: false, 1: true, 50: true, 100: true, 101: false} {
		if got := has(l, seq, now); got != want {
			t.Errorf("contains(%d) = %v", seq, got)
		}
	}
	addSeqs(l, maxSeq, maxSeq+10, now) // past the bound: ignored
	if has(l, maxSeq, now) {
		t.Error("a sequence past maxSeq was taken")
	}
	var as []acc
	for _, s := range []uint64{7, 3, 4, 0, 5, 9, 9, 10} {
		as = append(as, acc{s, tsBase + int64(s)})
	}
	as = append(as, acc{11, tsBase}) // stored before 10: not of the same stream
	got := toSpans(as)
	var b strings.Builder
	for _, s := range got {
		fmt.Fprintf(&b, "[%d,%d@%d,%d]", s.lo, s.hi, s.tmin-tsBase, s.tmax-tsBase)
	}
	if b.String() != "[3,5@3,5][7,7@7,7][9,10@9,10][11,11@0,0]" {
		t.Errorf("toSpans: %s", b.String())
	}
}

func TestLedgerWindow(t *testing.T) {
	t0 := time.Now()
	l := newLedger(time.Minute, 100)
	addSeqs(l, 1, 10, t0)
	addSeqs(l, 20, 30, t0.Add(40*time.Second))
	at := t0.Add(70 * time.Second)
	if has(l, 5, at) {
		t.Error("a sequence older than the window is still suppressed")
	}
	if !has(l, 25, at) {
		t.Error("a sequence within the window is not")
	}
	l.sweep(at)
	if got := spansOf(l); got != "[20,30]" {
		t.Errorf("after the sweep: %s", got)
	}
	l.sweep(t0.Add(2 * time.Minute))
	if l.len() != 0 {
		t.Errorf("after the window: %s", spansOf(l))
	}
}

func TestLedgerCap(t *testing.T) {
	t0 := time.Now()
	const cap = 64
	l := newLedger(time.Hour, cap)
	// Disjoint spans, each newer than the last: far past the cap.
	for i := range uint64(1000) {
		addSeqs(l, 10*i+1, 10*i+5, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := l.len(); n > cap || n < cap*7/8 {
		t.Fatalf("%d spans for a cap of %d", n, cap)
	}
	if !has(l, 9991, t0.Add(time.Second)) {
		t.Error("the newest span was dropped")
	}
	if has(l, 1, t0.Add(time.Second)) {
		t.Error("the oldest span was kept")
	}
	if got := l.sweep(t0.Add(time.Second)); got != 1000-l.len() {
		t.Errorf("sweep reports %d dropped past the cap, want %d", got, 1000-l.len())
	}
	// A huge range is one span, whatever it covers.
	l.reset()
	addSeqs(l, 1, 1<<40, t0)
	if l.len() != 1 || !has(l, 1<<39, t0) {
		t.Errorf("huge range: %s", spansOf(l))
	}
}

// dedupeFor is a runner's suppression set up on incarnation inc, without a session.
func dedupeFor(t *testing.T, e *env, name string, inc incarnation) *dedupe {
	t.Helper()
	w, err := New(Config{NC: e.nc, JS: e.js, Sinks: e.factory(), Instance: "me"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(w, spec{exp: cwExport(name, "logs.x.>")})
	r.dd.inc = inc
	r.dd.ok.Store(true)
	r.dd.delivered.Store(1000)
	return r.dd
}

func TestAcceptedBroadcastHostile(t *testing.T) {
	e := newEnv(t)
	created := time.Date(2026, 11, 24, 2, 0, 0, 123, time.UTC)
	inc := incarnation{stream: DefaultLogsStream, streamCreated: created, consumerCreated: created.Add(time.Second)}
	const name = "hostile"
	d := dedupeFor(t, e, name, inc)
	subject := events.Subjects{}.Accepted(name)
	valid := func(mod func(*events.ExportAccepted)) []byte {
		a := events.ExportAccepted{Export: name, Worker: "peer", Runner: "r1", Stream: inc.stream, StreamCreated: inc.streamCreated,
			ConsumerCreated: inc.consumerCreated, Ranges: [][]uint64{{100, 110}}, Stored: [][]int64{{tsBase + 100, tsBase + 110}}}
		if mod != nil {
			mod(&a)
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ignored := func(reason string) float64 {
		return testutil.ToFloat64(metrics.ExportAcceptedIgnored.WithLabelValues(name, reason))
	}
	manyRanges := make([][]uint64, events.MaxAcceptedRanges+1)
	for i := range manyRanges {
		manyRanges[i] = []uint64{uint64(2*i + 1), uint64(2*i + 1)}
	}
	cases := []struct {
		name, reason string
		body         []byte
	}{
		{"not json", ignoredMalformed, []byte("{nope")},
		{"array", ignoredMalformed, []byte(`[[1,2]]`)},
		{"unknown field", ignoredMalformed, []byte(strings.Replace(string(valid(nil)), `{`, `{"all":true,`, 1))},
		{"duplicated field", ignoredMalformed, []byte(strings.Replace(string(valid(nil)), `{`, `{"ranges":[[1,99]],`, 1))},
		{"no ranges", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = nil })},
		{"zero seq", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = [][]uint64{{0, 5}} })},
		{"reversed", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = [][]uint64{{9, 5}} })},
		{"triple", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = [][]uint64{{1, 2, 3}} })},
		{"too many ranges", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = manyRanges })},
		{"huge", ignoredMalformed, []byte(`{"export":"` + name + `","pad":"` + strings.Repeat("x", 70<<10) + `"}`)},
		{"no stored", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Stored = nil })},
		{"stored short", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Ranges = append(a.Ranges, []uint64{200, 200}) })},
		{"stored reversed", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Stored = [][]int64{{tsBase + 9, tsBase}} })},
		{"stored zero", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Stored = [][]int64{{0, tsBase}} })},
		{"stored triple", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Stored = [][]int64{{1, 2, 3}} })},
		{"stored strings", ignoredMalformed, []byte(strings.Replace(string(valid(nil)), fmt.Sprintf("[[%d,", tsBase+100), `[["x",`, 1))},
		{"no runner", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.Runner = "" })},
		{"ahead of the consumer", ignoredAhead, valid(func(a *events.ExportAccepted) { a.Ranges = [][]uint64{{100, 1000 + aheadSlack + 1}} })},
		{"no incarnation", ignoredMalformed, valid(func(a *events.ExportAccepted) { a.StreamCreated = time.Time{} })},
		{"other export", ignoredExport, valid(func(a *events.ExportAccepted) { a.Export = "other" })},
		{"old stream", ignoredIncarnation, valid(func(a *events.ExportAccepted) { a.StreamCreated = created.Add(-time.Hour) })},
		{"old consumer", ignoredIncarnation, valid(func(a *events.ExportAccepted) { a.ConsumerCreated = created })},
		{"other stream", ignoredIncarnation, valid(func(a *events.ExportAccepted) { a.Stream = "OTHER_LOGS" })},
	}
	for _, c := range cases {
		before := ignored(c.reason)
		d.receive(&nats.Msg{Subject: subject, Data: c.body})
		if got := ignored(c.reason) - before; got != 1 {
			t.Errorf("%s: ignored{%s} grew by %v", c.name, c.reason, got)
		}
		if d.led.len() != 0 {
			t.Fatalf("%s: the ledger took %s", c.name, spansOf(d.led))
		}
	}
	// Its own broadcast is already in the ledger.
	d.receive(&nats.Msg{Subject: subject, Data: valid(func(a *events.ExportAccepted) { a.Worker, a.Runner = "me", d.id })})
	if d.led.len() != 0 {
		t.Fatalf("its own broadcast was merged: %s", spansOf(d.led))
	}
	// Another runner of the same worker (the one a spec change replaced,
	// its sink call late) is a peer.
	d.receive(&nats.Msg{Subject: subject, Data: valid(func(a *events.ExportAccepted) { a.Worker, a.Ranges = "me", [][]uint64{{100, 100}} })})
	if got := spansOf(d.led); got != "[100,100]" {
		t.Fatalf("the previous runner's broadcast: ledger %s", got)
	}
	d.led.reset()
	// The peer's valid one is taken, and only for this export.
	d.receive(&nats.Msg{Subject: subject, Data: valid(nil)})
	if got := spansOf(d.led); got != "[100,110]" {
		t.Fatalf("valid broadcast: ledger %s", got)
	}
	other := dedupeFor(t, e, "other", inc)
	if other.led.len() != 0 {
		t.Fatal("another export's ledger is shared")
	}
	// Before the session knows its incarnation nothing is taken.
	d.led.reset()
	d.ok.Store(false)
	d.receive(&nats.Msg{Subject: subject, Data: valid(nil)})
	if d.led.len() != 0 {
		t.Fatal("a broadcast was taken before the incarnation was known")
	}
}

// dropAcks is an ack hook that loses every ack (as an ack taken by a
// consumer leader that died before replicating it), counting them.
type dropAcks struct {
	mu   sync.Mutex
	seqs map[uint64]int
	n    atomic.Int64
}

func (d *dropAcks) hook(m jetstream.Msg) error {
	d.n.Add(1)
	if meta, err := m.Metadata(); err == nil {
		d.mu.Lock()
		d.seqs[meta.Sequence.Stream]++
		d.mu.Unlock()
	}
	return nil
}

// lostAcks runs worker A, whose acks are all lost, and worker B on one
// export; once every event is in CloudWatch, A stops: what it delivered
// comes back to B after AckWait. It returns how many events CloudWatch holds
// more than once, once the consumer has nothing pending.
// With late, B starts only once A has delivered everything: it learns
// what A accepted from A's periodic broadcast.
func lostAcks(t *testing.T, suppress, late bool) (dups, lost int) {
	const n = 600
	e := newEnv(t)
	exp := cwExport(fmt.Sprintf("lostacks-%v-%v", suppress, late), "logs.lost.>")
	exp.Batch.MaxEvents = 50
	drop := &dropAcks{seqs: map[uint64]int{}}
	// A long ack wait: B's first fetches must not see A's messages again
	// before A has stopped, or A would deliver them again itself.
	mod := func(a bool) func(*Config) {
		return func(c *Config) {
			c.AckWait = 4 * time.Second
			c.noSuppress = !suppress
			if a {
				c.Instance, c.ackHook = "worker-a", drop.hook
			} else {
				c.Instance = "worker-b"
			}
		}
	}
	before := testutil.ToFloat64(metrics.ExportRedeliveriesSuppressed.WithLabelValues(exp.Name))
	var b *Worker
	if !late {
		b = e.worker(mod(false), exp)
	}
	a := e.worker(mod(true), exp)
	natstest.Eventually(t, 30*time.Second, "the workers subscribed", func() bool {
		return e.subscribers(events.Subjects{}.Accepted(exp.Name)) >= 2 || !suppress || late
	})
	e.publish(0, n, []string{"logs.lost.a", "logs.lost.b"}, "")
	natstest.Eventually(t, 60*time.Second, "every event in CloudWatch", func() bool { return len(cwIDs(e.cw)) == n })
	if drop.n.Load() == 0 {
		t.Fatal("worker A accepted nothing: the test proves nothing")
	}
	if late {
		b = e.worker(mod(false), exp)
		natstest.Eventually(t, 30*time.Second, "B heard A's ranges again", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			r := b.runners[exp.Name]
			return r != nil && r.dd.led.len() > 0
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("stopping A: %v", err)
	}
	natstest.Eventually(t, 90*time.Second, "A's events back and acked by B", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return ack == 0 && pending == 0
	})
	ids := cwIDs(e.cw)
	for i := range n {
		switch {
		case ids[i] == 0:
			lost++
		case ids[i] > 1:
			dups += ids[i] - 1
		}
	}
	sup := testutil.ToFloat64(metrics.ExportRedeliveriesSuppressed.WithLabelValues(exp.Name)) - before
	t.Logf("suppress=%v: A accepted %d events whose acks were lost; %v redeliveries suppressed; %d duplicates",
		suppress, len(drop.seqs), sup, dups)
	if suppress && int(sup) < len(drop.seqs) {
		t.Errorf("%v redeliveries suppressed, want at least A's %d", sup, len(drop.seqs))
	}
	return dups, lost
}

// subscribers counts the server's subscriptions on subject.
func (e *env) subscribers(subject string) int {
	sz, err := e.srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject})
	if err != nil {
		return 0
	}
	return sz.Total
}

// TestRedeliverySuppressedAcrossWorkers: worker A's acks are lost after its
// calls succeeded, so JetStream hands A's events to worker B after AckWait;
// B knows from A's broadcasts that they were accepted, acks them and does
// not deliver them again: nothing lost, nothing twice.
func TestRedeliverySuppressedAcrossWorkers(t *testing.T) {
	dups, lost := lostAcks(t, true, false)
	if lost > 0 || dups > 0 {
		t.Fatalf("%d lost, %d duplicates", lost, dups)
	}
}

// TestRedeliverySuppressedByLateWorker: B starts after A's calls (as a
// worker restarted, or cut off while A broadcast): A's periodic broadcast
// tells it, and it suppresses A's events all the same.
func TestRedeliverySuppressedByLateWorker(t *testing.T) {
	dups, lost := lostAcks(t, true, true)
	if lost > 0 || dups > 0 {
		t.Fatalf("%d lost, %d duplicates", lost, dups)
	}
}

// TestLostAcksDuplicateWithoutLedger: the same without suppression delivers
// A's events a second time (the test above would fail without the ledger).
func TestLostAcksDuplicateWithoutLedger(t *testing.T) {
	dups, lost := lostAcks(t, false, false)
	if lost > 0 {
		t.Fatalf("%d lost", lost)
	}
	if dups == 0 {
		t.Fatal("no duplicates without the ledger: the fault was not reproduced")
	}
}

// blockingSink ignores its context: Write blocks until release is closed,
// then accepts everything.
type blockingSink struct {
	Sink
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *blockingSink) Write(_ context.Context, recs []logevent.Record, out []logevent.Outcome) error {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	for i := range out {
		if out[i].Status == logevent.Pending {
			out[i] = logevent.Outcome{Status: logevent.Delivered}
		}
	}
	return nil
}

// TestStopWithSinkIgnoringContext: a stop whose sink call ignores the
// context returns within its deadline and grace, says so, counts what the
// batch held, and no longer keeps it alive: another worker gets the events
// after AckWait.
func TestStopWithSinkIgnoringContext(t *testing.T) {
	const n = 20
	e := newEnv(t)
	exp := cwExport("ignorectx", "logs.ignore.>")
	bs := &blockingSink{entered: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(bs.release) }) }
	defer release()
	subject := events.Subjects{}.Accepted(exp.Name)
	heard, err := e.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	real := e.factory()
	factory := func(ctx context.Context, x events.Export, c events.Connection) (Sink, error) {
		s, err := real(ctx, x, c)
		if err != nil {
			return nil, err
		}
		bs.Sink = s
		return bs, nil
	}
	abandoned := testutil.ToFloat64(metrics.ExportStopAbandoned.WithLabelValues(exp.Name))
	w := e.worker(func(c *Config) { c.Sinks, c.AckWait = factory, 2*time.Second }, exp)
	e.publish(0, n, []string{"logs.ignore.a"}, "")
	select {
	case <-bs.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the sink was never called")
	}
	w.mu.Lock()
	r := w.runners[exp.Name]
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- w.Stop(ctx) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Logf("Stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not return while the sink ignored its context")
	}
	// Worker.Stop may return (its own stopGrace) just before the runner's
	// stop has abandoned the call and counted it (it counts before it closes
	// the ledger): wait for that.
	natstest.Eventually(t, 30*time.Second, "the runner abandoned", func() bool { return r.dd.closed.Load() })
	// What the worker had fetched by then: the batches in delivery or queued.
	if got := testutil.ToFloat64(metrics.ExportStopAbandoned.WithLabelValues(exp.Name)) - abandoned; got < 1 || got > n {
		t.Errorf("stop_abandoned grew by %v, want 1 to %d", got, n)
	}
	// The abandoned runner's ledger stopped with it: no subscription left
	// (the session, stuck in the call, has not returned), and its late
	// success is not broadcast.
	natstest.Eventually(t, 30*time.Second, "the abandoned runner's subscription gone", func() bool {
		return e.subscribers(subject) == 1 // the test's own
	})
	// Not kept alive any more: a second worker gets them after AckWait and
	// delivers them.
	e.worker(func(c *Config) { c.AckWait = 2 * time.Second }, exp)
	natstest.Eventually(t, 60*time.Second, "the abandoned events delivered by the other worker", func() bool {
		return len(cwIDs(e.cw)) == n
	})
	// The stuck call succeeds late: nothing is broadcast.
	release()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not end once the sink call returned")
	}
	if err := w.cfg.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := heard.NextMsg(0)
		if err != nil {
			break
		}
		var a events.ExportAccepted
		if events.Decode(m.Data, &a) == nil && a.Runner == r.dd.id && a.Worker == w.instance {
			t.Fatalf("the abandoned runner broadcast after its stop: %s", m.Data)
		}
	}
}

// TestLedgerReusedSequence: a sequence the stream reused (created again, or
// an R1 stream that lost its last messages) holds a message stored after
// every message of the accepted span: it is not suppressed, a continuation
// stored after such a gap does not merge into the old span, and a range of
// the new messages overlapping the old span replaces it.
func TestLedgerReusedSequence(t *testing.T) {
	now := time.Now()
	t0 := now.Add(-time.Hour).UnixNano()
	ms := int64(time.Millisecond)
	ts := func(seq uint64) int64 { return t0 + int64(seq)*ms } // first life: a message a millisecond
	l := newLedger(time.Minute, 100)
	l.add(1, 100, ts(1), ts(100), now)
	if !l.contains(50, ts(50), now) {
		t.Fatal("the accepted message itself is not suppressed")
	}
	// The stream lost 81..100 and stores new messages there, 5 s later.
	later := func(seq uint64) int64 { return ts(100) + 5*int64(time.Second) + int64(seq)*ms }
	if l.contains(85, later(85), now) {
		t.Fatal("DATA LOSS: a message at a reused sequence is suppressed")
	}
	// New 101..110 accepted first: adjacent, but stored after the gap.
	l.add(101, 110, later(101), later(110), now)
	if l.contains(85, later(85), now) {
		t.Fatalf("DATA LOSS: the continuation merged across the reuse: %s, reused 85 suppressed", spansOf(l))
	}
	if got := spansOf(l); got != "[1,100][101,110]" {
		t.Errorf("spans %s", got)
	}
	// New 81..90 accepted: the old span's times are all older: it goes.
	l.add(81, 90, later(81), later(90), now)
	if got := spansOf(l); got != "[81,90][101,110]" {
		t.Errorf("after the new range over the reused ones: %s", got)
	}
	if !l.contains(85, later(85), now) || l.contains(85, ts(85), now) {
		t.Error("the new message at 85 is not suppressed, or the old still is")
	}
	// An old broadcast arriving late over the new range is ignored.
	l.add(81, 100, ts(81), ts(100), now)
	if got := spansOf(l); got != "[81,90][101,110]" {
		t.Errorf("a late old range changed the ledger: %s", got)
	}
	// A continuation of the same life stored right after merges.
	l.add(111, 120, later(111), later(120), now)
	if got := spansOf(l); got != "[81,90][101,120]" {
		t.Errorf("continuation: %s", got)
	}
}

// TestLedgerChunkExpiry: extending a span does not renew it for ever: a
// span is extended only while it is younger than a quarter of the window,
// so what was accepted first expires a window after its chunk.
func TestLedgerChunkExpiry(t *testing.T) {
	t0 := time.Now()
	l := newLedger(time.Minute, 100)
	for i := range uint64(12) { // a range every 10 s, each continuing the last
		addSeqs(l, 10*i+1, 10*i+10, t0.Add(time.Duration(i)*10*time.Second))
	}
	at := t0.Add(115 * time.Second)
	if has(l, 5, at) {
		t.Errorf("the first range, accepted 115 s ago, is still suppressed (window 1 min): %s", spansOf(l))
	}
	if !has(l, 115, at) {
		t.Error("the last range is not")
	}
	l.sweep(at)
	if has(l, 5, at) || l.len() < 2 {
		t.Errorf("after the sweep: %s", spansOf(l))
	}
}

// TestLedgerGeneration: ranges read before a reset (a callback of the
// previous session) are dropped, and a peer's many ranges merge at once.
func TestLedgerGeneration(t *testing.T) {
	now := time.Now()
	l := newLedger(time.Minute, 100)
	gen := l.generation()
	l.reset()
	if l.addAll(gen, []span{{lo: 1, hi: 5, tmin: tsBase + 1, tmax: tsBase + 5}}, now) || l.len() != 0 {
		t.Fatalf("an add of the previous generation was taken: %s", spansOf(l))
	}
	addSeqs(l, 20, 30, now)
	addSeqs(l, 50, 60, now)
	var rs []span
	for _, r := range [][2]uint64{{70, 70}, {5, 9}, {31, 40}, {45, 49}, {55, 80}, {1, 3}, {0, 4}, {10, 9}} {
		rs = append(rs, span{lo: r[0], hi: r[1], tmin: tsBase + int64(r[0]), tmax: tsBase + int64(r[1])})
	}
	if !l.addAll(l.generation(), rs, now) {
		t.Fatal("not taken")
	}
	if got, want := spansOf(l), "[1,3][5,9][20,40][45,80]"; got != want {
		t.Errorf("spans %s, want %s", got, want)
	}
}

// TestDedupeConsumerCreatedAgain: the status refresh sees the consumer
// created again (a peer, after the stream was created again) while the
// session reads it through the same durable name: the ledger is reset and
// suppression stays off for the session, so the old sequences suppress
// nothing of the new stream.
func TestDedupeConsumerCreatedAgain(t *testing.T) {
	e := newEnv(t)
	created := time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)
	inc := incarnation{stream: DefaultLogsStream, streamCreated: created, consumerCreated: created}
	d := dedupeFor(t, e, "again", inc)
	d.accepted([]acc{{1, tsBase + 1}, {2, tsBase + 2}})
	if d.led.len() != 1 {
		t.Fatalf("ledger %s", spansOf(d.led))
	}
	d.checkConsumer(created, 2) // the same: nothing happens
	if d.led.len() != 1 || !d.ok.Load() {
		t.Fatal("reset without a change")
	}
	d.checkConsumer(created.Add(time.Hour), 0)
	if d.led.len() != 0 || d.own.len() != 0 || d.ok.Load() {
		t.Fatalf("consumer created again: ledger %s, own %s, on %v", spansOf(d.led), spansOf(d.own), d.ok.Load())
	}
	d.accepted([]acc{{1, tsBase + 10}})
	if d.led.len() != 0 {
		t.Fatal("recorded after the reset within the session")
	}
}

// TestDedupeSuppressStoredTime: a peer's broadcast carries the stored times;
// a message at one of its sequences is suppressed only when it is the one
// stored then, not a later one at the same (reused) sequence.
func TestDedupeSuppressStoredTime(t *testing.T) {
	e := newEnv(t)
	created := time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)
	inc := incarnation{stream: DefaultLogsStream, streamCreated: created, consumerCreated: created}
	d := dedupeFor(t, e, "stored", inc)
	acked := 0
	d.r.w.cfg.ackHook = func(jetstream.Msg) error { acked++; return nil }
	stored := time.Unix(0, tsBase+100)
	body, err := json.Marshal(events.ExportAccepted{Export: "stored", Worker: "peer", Runner: "r1", Stream: inc.stream,
		StreamCreated: created, ConsumerCreated: created, Ranges: [][]uint64{{100, 110}}, Stored: [][]int64{{tsBase + 100, tsBase + 110}}})
	if err != nil {
		t.Fatal(err)
	}
	d.receive(&nats.Msg{Subject: events.Subjects{}.Accepted("stored"), Data: body})
	if d.suppress(nil, 105, stored.Add(time.Minute)) {
		t.Fatal("DATA LOSS: a message stored after the range's messages (a reused sequence) was suppressed")
	}
	if !d.suppress(nil, 105, time.Unix(0, tsBase+105)) || acked != 1 {
		t.Fatalf("the accepted message itself was not suppressed (acked %d)", acked)
	}
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

// TestBacklogCallsAreOneRange: a backlog of one subject is pulled one pull
// at a time (the pull ahead goes out once the pull before it is complete),
// so each call carries consecutive sequences: its broadcast is one range.
// (With two pulls waiting at once the server served them in turn: every
// batch got every other sequence, a broadcast carried a range per message.)
func TestBacklogCallsAreOneRange(t *testing.T) {
	const n = 20_000
	e := newEnv(t)
	exp := cwExport("onerange", "logs.one.>")
	exp.Batch.MaxEvents = 2000
	if _, err := e.js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var broadcasts, most int
	sub, err := e.nc.Subscribe(events.Subjects{}.Accepted(exp.Name), func(m *nats.Msg) {
		var a events.ExportAccepted
		if events.Decode(m.Data, &a) == nil {
			mu.Lock()
			broadcasts++
			most = max(most, len(a.Ranges))
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	e.publish(0, n, []string{"logs.one.a"}, "")
	w := e.worker(nil, exp)
	waitProgress(t, stallOf(w), "every event exported", n, func() int { return e.cw.Count() })
	calls := 0
	for _, c := range e.cw.Calls() {
		if c.Op == "PutLogEvents" && c.Error == "" {
			calls++
		}
	}
	natstest.Eventually(t, 30*time.Second, "a broadcast for every call", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return broadcasts >= calls
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls, %d broadcasts, at most %d ranges in one", calls, broadcasts, most)
	// One range a call; a periodic repeat of the ledger has at most one a call.
	if most > calls {
		t.Fatalf("a broadcast of %d ranges for %d calls of one subject's backlog: want one range a call", most, calls)
	}
}
