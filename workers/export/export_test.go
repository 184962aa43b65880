package export

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestManyEventsTwoBlocks: 100,000 events over several subjects reach both
// export blocks: CloudWatch at least once (duplicates counted) with every call
// within the limits and in timestamp order, Cloud Logging exactly once.
func TestManyEventsTwoBlocks(t *testing.T) {
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 20_000
	}
	e := newEnv(t)
	subjects := subjectsN("logs.app", 5)
	results := e.watchExported()
	cw, cl := cwExport("cw-app", "logs.app.>"), clExport("cl-app", "logs.app.>")
	// The lag gauge is refreshed every StatusInterval: often enough that a
	// fast machine's delivery (a few seconds) is still seen with events pending.
	w := e.worker(func(c *Config) { c.StatusInterval = 200 * time.Millisecond }, cw, cl)
	stall := stallOf(w)
	start, cpu := time.Now(), cpuTime()
	e.publish(0, n, subjects, "")
	t.Logf("published %d events in %v", n, time.Since(start))
	maxLag := 0.0
	defer func() {
		if t.Failed() {
			t.Logf("CloudWatch has %d events, Cloud Logging %d (%d duplicate writes); consumer lag of cw-app %v",
				e.cw.Count(), e.cl.Count(), e.cl.Duplicates(), testutil.ToFloat64(metrics.ExportConsumerLag.WithLabelValues("cw-app")))
		}
	}()
	waitProgress(t, stall, "every event in both clouds", 2*n, func() int {
		maxLag = max(maxLag, testutil.ToFloat64(metrics.ExportConsumerLag.WithLabelValues("cw-app")))
		return min(e.cw.Count(), n) + min(e.cl.Count(), n)
	})
	t.Logf("delivered in %v, %v CPU (the process's, -race %v)", time.Since(start), cpuTime()-cpu, raceEnabled)
	ids := cwIDs(e.cw)
	dups := 0
	for i := range n {
		c := ids[i]
		if c == 0 {
			t.Fatalf("event %d missing from CloudWatch", i)
		}
		dups += c - 1
	}
	t.Logf("CloudWatch: %d events, %d duplicates; Cloud Logging: %d entries, %d duplicate writes dropped by insertId",
		e.cw.Count(), dups, e.cl.Count(), e.cl.Duplicates())
	if e.cl.Count() != n {
		t.Fatalf("Cloud Logging stored %d entries, want exactly %d", e.cl.Count(), n)
	}
	puts := 0
	for i, c := range e.cw.Calls() {
		if c.Op != "PutLogEvents" {
			continue
		}
		puts++
		if (c.Error != "" && c.Error != "ResourceNotFoundException") || c.Bytes > cloudwatch.MaxBatchBytes || c.Events > cloudwatch.MaxBatchEvents || !c.Ordered || c.SpanMS > 24*3600*1000 {
			t.Fatalf("call %d broke a limit: %+v", i, c)
		}
		if c.AccessKeyID != testKeyID {
			t.Fatalf("call %d signed by %q", i, c.AccessKeyID)
		}
	}
	for _, w := range e.cl.Writes() {
		if w.Bytes > 10<<20 {
			t.Fatalf("Cloud Logging request of %d bytes", w.Bytes)
		}
	}
	if streams := e.cw.Streams("/platform/cw-app"); len(streams) != len(subjects) {
		t.Fatalf("streams %v, want one per subject", streams)
	}
	// One result event per delivered batch, published as it is settled.
	waitProgress(t, stall, "result events", 2*n, func() int {
		a, _ := results.total("cw-app")
		b, _ := results.total("cl-app")
		return min(a, n) + min(b, n)
	})
	_, batches := results.total("cw-app")
	if batches >= puts+1 || batches == 0 {
		// One result event per delivered batch; a batch may need several calls (one per stream).
		t.Logf("cw-app: %d batches, %d calls", batches, puts)
	}
	if maxLag == 0 {
		t.Errorf("consumer lag never reported while %d events were pending", n)
	}
	if testutil.CollectAndCount(metrics.ExportBatchEvents) == 0 {
		t.Errorf("no batch size observed")
	}
	waitProgress(t, stall, "consumers fully acked", 0, func() int {
		a, p := consumerPending(t, e.js, "cw-app")
		b, q := consumerPending(t, e.js, "cl-app")
		if a < 0 || b < 0 {
			return -1 << 40 // no consumer info: never reaches 0
		}
		return -(a + b + int(p+q))
	})
}

// TestBadEvents: every kind of difficult event ends up exported, retried or
// dead-lettered with its reason.
func TestBadEvents(t *testing.T) {
	e := newEnv(t)
	e.cw.CreateGroup("/bad/logs.bad.expired", 7) // 7-day retention: a 10-day-old event is expired
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }
	huge := `{"level":"info","msg":"` + strings.Repeat("h", cloudwatch.MaxMessageBytes) + `"}`
	tests := []struct {
		subject string
		body    string
		dead    string // dead-letter reason, "" if exported
		check   func(msg string) bool
	}{
		{subject: "logs.bad.ok", body: `{"level":"info","msg":"fine","time":"` + at(0) + `"}`},
		{subject: "logs.bad.old", body: `{"level":"info","msg":"old","time":"` + at(-15*24*time.Hour) + `"}`, dead: events.DeadTooOld},
		{subject: "logs.bad.expired", body: `{"level":"info","msg":"expired","time":"` + at(-10*24*time.Hour) + `"}`, dead: events.DeadExpired},
		{subject: "logs.bad.huge", body: huge, dead: events.DeadTooLarge},
		{subject: "logs.bad.utf8", body: "text with \xff\xfe invalid bytes", check: func(m string) bool { return m == "text with \uFFFD invalid bytes" }},
		{subject: "logs.bad.empty", body: "", dead: events.DeadInvalid},
		{subject: "logs.bad.blank", body: "  \n", dead: events.DeadInvalid},
		{subject: "logs.bad.year", body: `{"level":"info","msg":"year ahead","time":"` + at(365*24*time.Hour) + `"}`, dead: events.DeadRejected},
		{subject: "logs.bad.text", body: "plain line\n", check: func(m string) bool { return m == "plain line" }},
	}
	results := e.watchExported()
	exp := events.Export{Name: "bad", Connection: "aws-logs", Subjects: []string{"logs.bad.>"}, MinLevel: "info",
		CloudWatch: &events.CloudWatchSink{LogGroup: "/bad/{subject}", LogStream: "s", Create: true},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(20 * time.Millisecond)}}
	dropped := testutil.ToFloat64(metrics.ExportDroppedLevel.WithLabelValues("bad"))
	tooNewBefore := counter("bad", "too_new")
	w := e.worker(func(c *Config) { c.TooNewMax = 100 * time.Millisecond }, exp)
	stall := stallOf(w) + w.cfg.TooNewMax
	for _, tt := range tests {
		if _, err := e.js.Publish(context.Background(), tt.subject, []byte(tt.body)); err != nil {
			t.Fatalf("publish %s: %v", tt.subject, err)
		}
	}
	// Below min_level: acked and counted, not exported.
	if _, err := e.js.Publish(context.Background(), "logs.bad.debug", []byte(`{"level":"debug","msg":"chatty"}`)); err != nil {
		t.Fatal(err)
	}
	// Too new (2h30m ahead): retried until CloudWatch's clock catches up.
	if _, err := e.js.Publish(context.Background(), "logs.bad.soon", []byte(`{"level":"info","msg":"soon","time":"`+at(150*time.Minute)+`"}`)); err != nil {
		t.Fatal(err)
	}
	wantDead := 0
	for _, tt := range tests {
		if tt.dead != "" {
			wantDead++
		}
	}
	waitProgress(t, stall, "dead letters", wantDead, func() int { return len(e.deadLetters()) })
	waitProgress(t, stall, "too-new retried", 2, func() int { return int(counter("bad", "too_new") - tooNewBefore) })
	if n := len(e.cw.Events("/bad/logs.bad.soon", "s")); n != 0 {
		t.Fatalf("too-new event stored early")
	}
	e.cw.SetNow(func() time.Time { return time.Now().Add(time.Hour) })
	natstest.Eventually(t, stall, "too-new event exported once in range", func() bool { return len(e.cw.Events("/bad/logs.bad.soon", "s")) == 1 })

	dls := e.deadLetters()
	bySubject := map[string]events.DeadLetter{}
	for _, dl := range dls {
		if _, dup := bySubject[dl.Subject]; dup {
			t.Errorf("two dead letters for %s", dl.Subject)
		}
		bySubject[dl.Subject] = dl
	}
	for _, tt := range tests {
		stored := e.cw.Events("/bad/"+tt.subject, "s")
		dl, isDead := bySubject[tt.subject]
		switch {
		case tt.dead != "":
			if !isDead || dl.Reason != tt.dead || dl.Export != "bad" || dl.Seq == 0 || string(dl.Payload) != tt.body {
				t.Errorf("%s: dead letter %+v (payload %d bytes), want reason %s with the original payload", tt.subject, dl.Reason, len(dl.Payload), tt.dead)
			}
			if len(stored) != 0 {
				t.Errorf("%s: dead event was also stored", tt.subject)
			}
		default:
			if isDead || len(stored) != 1 {
				t.Errorf("%s: stored %d, dead %v", tt.subject, len(stored), isDead)
			} else if tt.check != nil && !tt.check(stored[0].Message) {
				t.Errorf("%s: stored %q", tt.subject, stored[0].Message)
			}
		}
	}
	if len(e.cw.Events("/bad/logs.bad.debug", "s")) != 0 {
		t.Errorf("debug event exported despite min_level")
	}
	if got := testutil.ToFloat64(metrics.ExportDroppedLevel.WithLabelValues("bad")); got != dropped+1 {
		t.Errorf("dropped counter %v, want %v", got, dropped+1)
	}
	if got := testutil.ToFloat64(metrics.ExportDead.WithLabelValues("bad", events.DeadTooLarge)); got < 1 {
		t.Errorf("dead too_large counter %v", got)
	}
	natstest.Eventually(t, stall, "all acked", func() bool {
		a, p := consumerPending(t, e.js, "bad")
		return a == 0 && p == 0
	})
	// ok, utf8, text and soon. A batch's result event is published after
	// its messages are acked (as its call returns): wait for it, the acks
	// and the stored events do not imply it arrived.
	waitProgress(t, stall, "result events", 4, func() int { n, _ := results.total("bad"); return n })
	if n, _ := results.total("bad"); n != 4 {
		t.Errorf("result events report %d exported, want 4", n)
	}
}

// TestFaults: 10 seconds of throttling or of 5xx, and at least the first
// calls that come, lose nothing and show in the retry metrics.
func TestFaults(t *testing.T) {
	const n = 3000
	// The fault ends once it has lasted its time and refused at least this
	// many calls. A fault bound by time alone could end before the first
	// call under load (the worker's consumer, sink and first batch can take
	// longer than the fault to come), and then nothing was retried.
	const refusals = 3
	calls := func(e *env, code string) int {
		k := 0
		for _, c := range e.cw.Calls() {
			if c.Op == awsfake.OpPutLogEvents && c.Error == code {
				k++
			}
		}
		return k
	}
	tests := []struct {
		name    string
		export  func() events.Export
		inject  func(e *env, d time.Duration)
		refused func(e *env) int
		reason  string
		count   func(e *env) int
	}{
		{name: "cloudwatch throttling", export: func() events.Export { return cwExport("f-cw-throttle", "logs.f.>") },
			inject:  func(e *env, d time.Duration) { e.cw.ThrottleFor(d); e.cw.ThrottleNext(refusals) },
			refused: func(e *env) int { return calls(e, "ThrottlingException") }, reason: string(events.CodeThrottled),
			count: func(e *env) int { return len(cwIDs(e.cw)) }},
		{name: "cloudwatch 5xx", export: func() events.Export { return cwExport("f-cw-5xx", "logs.f.>") },
			inject: func(e *env, d time.Duration) {
				e.cw.FailFor(d, http.StatusServiceUnavailable)
				e.cw.FailNext(refusals, http.StatusServiceUnavailable)
			},
			refused: func(e *env) int { return calls(e, "ServiceUnavailableException") }, reason: string(events.CodeUnavailable),
			count: func(e *env) int { return len(cwIDs(e.cw)) }},
		{name: "cloud logging resource exhausted", export: func() events.Export { return clExport("f-cl-quota", "logs.f.>") },
			inject:  func(e *env, d time.Duration) { e.cl.ExhaustFor(d); e.cl.ExhaustNext(refusals) },
			refused: func(e *env) int { return e.cl.Refused(codes.ResourceExhausted) }, reason: string(events.CodeThrottled),
			count: func(e *env) int { return e.cl.Count() }},
		{name: "cloud logging unavailable", export: func() events.Export { return clExport("f-cl-down", "logs.f.>") },
			inject:  func(e *env, d time.Duration) { e.cl.FailFor(d); e.cl.FailNext(refusals) },
			refused: func(e *env) int { return e.cl.Refused(codes.Unavailable) }, reason: string(events.CodeUnavailable),
			count: func(e *env) int { return e.cl.Count() }},
	}
	fault := 10 * time.Second
	if testing.Short() {
		fault = 2 * time.Second
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			exp := tt.export()
			before := counter(exp.Name, tt.reason)
			timeouts := counter(exp.Name, string(events.CodeTimeout))
			in := metrics.ExportEventsIn.WithLabelValues(exp.Name)
			inBefore := testutil.ToFloat64(in)
			// Calls that ran past CallTimeout (retried whole): under load a
			// whole Cloud Logging batch can, and then that call is not
			// counted with the fault's code.
			defer func() { t.Logf("retries{timeout}: %v", counter(exp.Name, string(events.CodeTimeout))-timeouts) }()
			// The fault outlasts AckWait twice: what the worker holds through
			// it is kept alive with InProgress every third of AckWait. (2 s
			// was too short under load: keep-alives late past 1.3 s let
			// messages be redelivered while held, and the redeliveries fed
			// on themselves.)
			w := e.worker(func(c *Config) { c.AckWait = fault / 2; c.RetryMax = time.Second })
			e.publish(0, n, subjectsN("logs.f", 3), "")
			tt.inject(e, fault)
			start := time.Now()
			w.Apply([]events.Export{exp}, e.conns())
			// Each refused call, delivered event or attempt that ran to its
			// deadline is progress; between two, at most the stall of a
			// healthy sink (which includes a retry's backoff).
			timedOut := func() int { return int(counter(exp.Name, string(events.CodeTimeout)) - timeouts) }
			waitActive(t, fault+stallOf(w), "the fault's refused calls", refusals, func() int { return tt.refused(e) }, timedOut)
			waitActive(t, fault+stallOf(w), "every event after the fault", n, func() int { return tt.count(e) }, timedOut)
			t.Logf("delivered in %v after the fault started, %d calls refused; the worker received %v messages for %d events",
				time.Since(start), tt.refused(e), testutil.ToFloat64(in)-inBefore, n)
			if time.Since(start) < fault {
				t.Fatalf("delivered during the fault")
			}
			if got := counter(exp.Name, tt.reason); got <= before {
				t.Fatalf("retries{%s} did not grow (%d calls refused)", tt.reason, tt.refused(e))
			}
			if got := tt.count(e); got != n {
				t.Fatalf("%d distinct events, want %d", got, n)
			}
		})
	}
}

// countingSink counts what one worker delivered.
type countingSink struct {
	Sink
	n *atomic.Int64
}

func (s countingSink) Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error {
	err := s.Sink.Write(ctx, recs, out)
	for _, o := range out {
		if o.Status == logevent.Delivered {
			s.n.Add(1)
		}
	}
	return err
}

// TestTwoWorkersShareExport: two workers on one export deliver each event once between them.
func TestTwoWorkersShareExport(t *testing.T) {
	const n = 20_000
	e := newEnv(t)
	exp := cwExport("shared", "logs.share.>")
	exp.Batch.MaxEvents = 500
	var counts [2]atomic.Int64
	for i := range counts {
		base := e.factory()
		e.worker(func(c *Config) {
			c.Sinks = func(ctx context.Context, x events.Export, conn events.Connection) (Sink, error) {
				s, err := base(ctx, x, conn)
				if err != nil {
					return nil, err
				}
				return countingSink{s, &counts[i]}, nil
			}
		}, exp)
	}
	e.publish(0, n, subjectsN("logs.share", 4), "")
	natstest.Eventually(t, 60*time.Second, "every event", func() bool { return e.cw.Count() >= n })
	ids := cwIDs(e.cw)
	for i := range n {
		if ids[i] != 1 {
			t.Fatalf("event %d stored %d times", i, ids[i])
		}
	}
	a, b := counts[0].Load(), counts[1].Load()
	t.Logf("worker 1 delivered %d, worker 2 delivered %d", a, b)
	if a+b != n {
		t.Fatalf("delivered %d in total, want %d", a+b, n)
	}
	if a == 0 || b == 0 {
		t.Fatalf("one worker did all the work: %d / %d", a, b)
	}
}

// TestStopFlushesInFlight: Stop delivers and acks a batch still waiting for max_wait.
func TestStopFlushesInFlight(t *testing.T) {
	e := newEnv(t)
	exp := cwExport("stopper", "logs.stop.>")
	exp.Batch.MaxWait = events.Duration(5 * time.Minute)
	w := e.worker(nil, exp)
	// In flight means in the worker's batch: the server counts a message as
	// pending its ack as soon as it queues it for delivery, before the worker
	// has received it; one still on its way when Stop unsubscribes is not
	// the worker's to flush (it is redelivered after AckWait).
	in := metrics.ExportEventsIn.WithLabelValues("stopper")
	before := testutil.ToFloat64(in)
	e.publish(0, 10, []string{"logs.stop.a"}, "")
	natstest.Eventually(t, 10*time.Second, "batch in flight", func() bool {
		a, _ := consumerPending(t, e.js, "stopper")
		return a == 10 && testutil.ToFloat64(in)-before == 10
	})
	if e.cw.Count() != 0 {
		t.Fatalf("delivered before max_wait")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if e.cw.Count() != 10 {
		t.Fatalf("stored %d after Stop, want 10", e.cw.Count())
	}
	natstest.Eventually(t, 5*time.Second, "acks", func() bool {
		a, _ := consumerPending(t, e.js, "stopper")
		return a == 0
	})
}

// TestApplyReconciles: export blocks added, changed and removed take effect without a restart.
func TestApplyReconciles(t *testing.T) {
	e := newEnv(t)
	w := e.worker(nil)
	exp := cwExport("recon", "logs.recon.>")
	w.Apply([]events.Export{exp}, e.conns())
	e.publish(0, 5, []string{"logs.recon.a"}, "")
	natstest.Eventually(t, 10*time.Second, "first block delivers", func() bool { return len(e.cw.Events("/platform/recon", "logs.recon.a")) == 5 })

	changed := exp
	changed.CloudWatch = &events.CloudWatchSink{LogGroup: "/changed", LogStream: "{export}", Create: true}
	w.Apply([]events.Export{changed}, e.conns())
	e.publish(5, 5, []string{"logs.recon.a"}, "")
	natstest.Eventually(t, 10*time.Second, "changed block delivers to the new group", func() bool { return len(e.cw.Events("/changed", "recon")) == 5 })
	if n := len(e.cw.Events("/platform/recon", "logs.recon.a")); n != 5 {
		t.Fatalf("old group got %d", n)
	}

	w.Apply(nil, e.conns())
	natstest.Eventually(t, 10*time.Second, "consumer deleted", func() bool {
		a, _ := consumerPending(t, e.js, "recon")
		return a == -1 && len(w.Running()) == 0
	})
	// Bad blocks are skipped, good ones still run.
	bad := cwExport("Bad Name", "logs.x")
	orphan := cwExport("orphan", "logs.orphan")
	orphan.Connection = "missing"
	w.Apply([]events.Export{bad, orphan, exp}, e.conns())
	if r := w.Running(); len(r) != 1 || r[0] != "recon" {
		t.Fatalf("running %v", r)
	}
}

// TestBindStream: a worker binds an existing logs stream instead of creating one.
func TestBindStream(t *testing.T) {
	e := newEnv(t)
	cfg := Config{NC: e.nc, JS: e.js, Sinks: e.factory(), LogsStream: "MY_LOGS", BindStream: true}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err == nil {
		t.Fatalf("binding a missing stream succeeded")
	}
	if _, err := New(Config{NC: e.nc, JS: e.js}); err == nil {
		t.Fatalf("New without a SinkFactory succeeded")
	}
}

func TestResultEventsSumUp(t *testing.T) {
	e := newEnv(t)
	results := e.watchExported()
	e.worker(nil, cwExport("sum", "logs.sum.>"))
	e.publish(0, 2500, subjectsN("logs.sum", 2), "")
	natstest.Eventually(t, 20*time.Second, "results", func() bool { n, _ := results.total("sum"); return n == 2500 })
	results.mu.Lock()
	defer results.mu.Unlock()
	var seqs []uint64
	for _, ev := range results.events {
		if ev.FirstSeq == 0 || ev.LastSeq < ev.FirstSeq || ev.Bytes == 0 {
			t.Fatalf("bad result event %+v", ev)
		}
		seqs = append(seqs, ev.FirstSeq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if seqs[0] != 1 {
		t.Fatalf("first batch starts at %d", seqs[0])
	}
}

// TestManyDeadLetters: a batch of more dead letters than the client allows
// in flight at once all reach the dead-letter stream, each once.
func TestManyDeadLetters(t *testing.T) {
	const n = 5000
	e := newEnv(t)
	e.worker(nil, cwExport("old", "logs.old.>"))
	old := time.Now().Add(-20 * 24 * time.Hour).UTC().Format(time.RFC3339Nano)
	for i := range n {
		if _, err := e.js.PublishAsync("logs.old.a", []byte(`{"level":"info","time":"`+old+`","msg":"old","id":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitPublished()
	natstest.Eventually(t, 30*time.Second, "dead letters", func() bool {
		a, p := consumerPending(t, e.js, "old")
		return a == 0 && p == 0
	})
	dls := e.deadLetters()
	seen := map[uint64]bool{}
	for _, dl := range dls {
		if dl.Reason != events.DeadTooOld || seen[dl.Seq] {
			t.Fatalf("dead letter %+v (seen before: %v)", dl.Reason, seen[dl.Seq])
		}
		seen[dl.Seq] = true
	}
	if len(seen) != n || e.cw.Count() != 0 {
		t.Fatalf("%d dead letters, %d exported; want %d and 0", len(seen), e.cw.Count(), n)
	}
}
