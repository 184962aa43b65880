package export

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// hangingAPI makes the first calls PutLogEvents calls hang: for hold (then
// it goes through), or until the caller's deadline when hold is 0 (then it
// fails without storing anything).
type hangingAPI struct {
	cloudwatch.API
	calls int64
	hold  time.Duration
	hung  *atomic.Int64
}

func (h hangingAPI) PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	if h.hung.Add(1) <= h.calls {
		if h.hold == 0 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		select {
		case <-time.After(h.hold):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.API.PutLogEvents(ctx, in, opts...)
}

func hangingFactory(h hangingAPI) SinkFactory {
	return func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		cfg, _ := testAWSConfig(ctx, conn)
		h.API = cloudwatch.NewClient(cfg, conn)
		return cloudwatch.New(h, exp, zerolog.Nop()), nil
	}
}

// assertOnce fails unless each of the n events was stored exactly once and
// logs how many messages the worker received (skipped stale ones come back).
func assertOnce(t *testing.T, e *env, exp string, n int, inBefore float64) {
	t.Helper()
	ids := cwIDs(e.cw)
	for i := range n {
		if ids[i] != 1 {
			t.Fatalf("event %d stored %d times", i, ids[i])
		}
	}
	t.Logf("the worker received %v messages for %d events", testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp))-inBefore, n)
}

// TestLongCallKeptAlive: a call that takes over twice AckWait (within its
// deadline) keeps its messages alive with InProgress: none is redelivered,
// none is stored twice.
func TestLongCallKeptAlive(t *testing.T) {
	const n = 200
	e := newEnv(t)
	// Long enough that an InProgress every third of it is not late on a
	// loaded machine (2 s was: a keepalive delayed past 1.3 s redelivered),
	// short enough that the fault outlasts it four times over.
	ackWait := 5 * time.Second
	var hung atomic.Int64
	exp := cwExport("longcall", "logs.long.>")
	in := testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp.Name))
	factory := hangingFactory(hangingAPI{calls: 1, hold: 5 * time.Second, hung: &hung})
	e.worker(func(c *Config) { c.Sinks, c.AckWait, c.CallTimeout = factory, ackWait, 20*time.Second }, exp)
	e.publish(0, n, []string{"logs.long.a"}, "")
	natstest.Eventually(t, 60*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	if hung.Load() < 2 {
		t.Fatal("no call after the held one; the test proves nothing")
	}
	assertOnce(t, e, exp.Name, n, in)
}

// TestHungCallHitsItsDeadline: calls that hang forever end at the call
// deadline, are classified retry (reason timeout) and retried; after the
// hang everything arrives once and nothing was redelivered.
func TestHungCallHitsItsDeadline(t *testing.T) {
	const n = 200
	e := newEnv(t)
	var hung atomic.Int64
	exp := cwExport("hungcall", "logs.hung.>")
	exp.Batch.MaxEvents = 50
	in := testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp.Name))
	before := counter(exp.Name, string(events.CodeTimeout))
	factory := hangingFactory(hangingAPI{calls: 3, hung: &hung})
	e.worker(func(c *Config) { c.Sinks, c.AckWait, c.CallTimeout = factory, 8*time.Second, time.Second }, exp)
	e.publish(0, n, []string{"logs.hung.a", "logs.hung.b"}, "")
	natstest.Eventually(t, 60*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	// A hung call ends only through its deadline: several ended, each retried.
	if got := counter(exp.Name, string(events.CodeTimeout)); got-before < 3 {
		t.Fatalf("retries{timeout} grew by %v", got-before)
	}
	assertOnce(t, e, exp.Name, n, in)
}

// TestSlowCallsGetLongerDeadlines: every call takes 1.5 s, the call
// deadline is 1 s. A deadline that stayed at 1 s would cut every attempt at
// the same point and resend it forever; an attempt that timed out gets twice
// the deadline, so each batch goes through on its second attempt, once.
func TestSlowCallsGetLongerDeadlines(t *testing.T) {
	const n = 100
	e := newEnv(t)
	var calls atomic.Int64
	exp := cwExport("slowcall", "logs.slow.>")
	exp.Batch.MaxEvents = 50
	in := testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp.Name))
	before := counter(exp.Name, string(events.CodeTimeout))
	factory := hangingFactory(hangingAPI{calls: 1 << 40, hold: 1500 * time.Millisecond, hung: &calls})
	e.worker(func(c *Config) { c.Sinks, c.AckWait, c.CallTimeout = factory, 8*time.Second, time.Second }, exp)
	e.publish(0, n, []string{"logs.slow.a"}, "")
	natstest.Eventually(t, 60*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	if got := counter(exp.Name, string(events.CodeTimeout)); got-before < 1 {
		t.Fatalf("retries{timeout} grew by %v: no call was cut, the test proves nothing", got-before)
	}
	assertOnce(t, e, exp.Name, n, in)
}

// TestRemoveStopsAtOnce: two workers retry an export whose sink fails; the
// block is removed on both (what `export rm` does through the registry):
// both stop at once, the durable consumer is gone, no further call is made.
func TestRemoveStopsAtOnce(t *testing.T) {
	e := newEnv(t)
	e.cw.FailFor(time.Hour, http.StatusServiceUnavailable)
	exp := cwExport("removed", "logs.rm.>")
	before := counter(exp.Name, string(events.CodeUnavailable))
	w1 := e.worker(nil, exp)
	w2 := e.worker(nil, exp)
	e.publish(0, 100, []string{"logs.rm.a"}, "")
	natstest.Eventually(t, 30*time.Second, "retries", func() bool {
		return counter(exp.Name, string(events.CodeUnavailable))-before >= 4
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The default AckWait (30s) and stop timeout (30s) are far away:
		// only stopping at once returns within the wait below.
		ch := make(chan struct{}, 2)
		for _, w := range []*Worker{w1, w2} {
			go func() { w.Apply(nil, e.conns()); ch <- struct{}{} }()
		}
		<-ch
		<-ch
	}()
	natstest.Eventually(t, 10*time.Second, "both workers stopped the removed export", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if _, err := e.js.Consumer(context.Background(), DefaultLogsStream, events.ExportConsumer(exp.Name)); err == nil {
		t.Fatal("the durable consumer still exists")
	}
	calls := len(e.cw.Calls())
	// Nothing runs any more: wait out several retry periods (RetryMax 500ms).
	time.Sleep(2 * time.Second)
	if got := len(e.cw.Calls()); got != calls {
		t.Fatalf("%d sink calls after the removal", got-calls)
	}
	if _, err := e.js.Consumer(context.Background(), DefaultLogsStream, events.ExportConsumer(exp.Name)); err == nil {
		t.Fatal("the durable consumer came back")
	}
}

// TestStopEndsWithHangingSink: Stop with a sink whose calls never return
// ends at its deadline (plus the grace), with nil: what it held is nak'ed.
func TestStopEndsWithHangingSink(t *testing.T) {
	e := newEnv(t)
	var hung atomic.Int64
	exp := cwExport("stophang", "logs.sh.>")
	factory := hangingFactory(hangingAPI{calls: 1 << 40, hung: &hung})
	w := e.worker(func(c *Config) { c.Sinks, c.CallTimeout = factory, time.Hour }, exp)
	e.publish(0, 20, []string{"logs.sh.a"}, "")
	natstest.Eventually(t, 10*time.Second, "a call hangs", func() bool { return hung.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- w.Stop(ctx) }()
	var err error
	natstest.Eventually(t, 5*time.Second, "Stop returns", func() bool {
		select {
		case err = <-returned:
			return true
		default:
			return false
		}
	})
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Nak'ed: another worker gets them at once, not after AckWait (30s).
	e.worker(nil, exp)
	natstest.Eventually(t, 15*time.Second, "another worker delivers the nak'ed events", func() bool {
		ack, _ := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == 20 && ack == 0
	})
}

// TestHealthOfFailingSink: the status of an export whose sink fails shows
// its lag (pending plus ack-pending, also on the metric), the last error
// with its cause and endpoint, the retries and the dead letters; after
// the fault, the last delivery.
func TestHealthOfFailingSink(t *testing.T) {
	e := newEnv(t)
	e.cw.FailFor(time.Hour, http.StatusServiceUnavailable)
	var failed atomic.Int64
	exp := cwExport("health", "logs.h.>")
	refusing := faultyFactory(faultyStream{stream: "logs.h.bad", until: time.Now().Add(time.Hour), failed: &failed,
		err: &smithy.GenericAPIError{Code: "InvalidParameterException", Message: "raw cloud text 4711"}})
	w := e.worker(func(c *Config) { c.Sinks, c.StatusInterval = refusing, 100*time.Millisecond }, exp)
	e.publish(0, 30, []string{"logs.h.a"}, "")
	var st events.ExportStatus
	status := func() events.ExportStatus {
		t.Helper()
		l, err := w.Status(context.Background(), exp.Name)
		if err != nil || len(l.Exports) != 1 {
			t.Fatalf("Status: %v %+v", err, l)
		}
		return l.Exports[0]
	}
	natstest.Eventually(t, 20*time.Second, "lag, retries and the last error", func() bool {
		st = status()
		return st.Lag == 30 && st.Retries >= 2 && st.LastError != nil && st.Workers == 1
	})
	le := st.LastError
	if le.Code != events.CodeUnavailable || le.Endpoint != e.cw.URL() || le.Cause == "" || le.Message == "" {
		t.Fatalf("last error %+v", le)
	}
	if st.LastDelivery != nil || st.DeadLetters != 0 {
		t.Fatalf("status %+v", st)
	}
	lag := metrics.ExportConsumerLag.WithLabelValues(exp.Name)
	natstest.Eventually(t, 10*time.Second, "the lag metric counts ack-pending events", func() bool {
		return testutil.ToFloat64(lag) == 30
	})
	if _, err := w.Status(context.Background(), "nosuch"); events.CodeOf(err) != events.CodeNotFound {
		t.Fatalf("status of an unknown export: %v", err)
	}

	// The cloud recovers; one stream's calls are refused for good.
	e.cw.FailFor(0, 0)
	e.publish(30, 10, []string{"logs.h.bad"}, "")
	natstest.Eventually(t, 30*time.Second, "delivered, dead-lettered, no lag", func() bool {
		st = status()
		return st.Lag == 0 && st.LastDelivery != nil && st.DeadLetters == 10 &&
			st.LastError != nil && strings.Contains(st.LastError.Cause, "4711")
	})
	natstest.Eventually(t, 10*time.Second, "the lag metric is back to 0", func() bool { return testutil.ToFloat64(lag) == 0 })
	for _, dl := range e.deadLetters() {
		if strings.Contains(dl.Detail, "4711") || !strings.Contains(dl.Detail, "InvalidParameterException") {
			t.Fatalf("dead letter detail %q", dl.Detail)
		}
	}
	if st.LastError == nil || !strings.Contains(st.LastError.Cause, "4711") {
		t.Fatalf("the refused call's cause is not in the status: %+v", st.LastError)
	}
}

// TestWarningsRateLimited: one warning per period, then one with the count
// of those suppressed.
func TestWarningsRateLimited(t *testing.T) {
	l := warnLimiter{every: time.Minute}
	t0 := time.Now()
	if ok, n := l.allow(t0); !ok || n != 0 {
		t.Fatal("first warning suppressed")
	}
	for i := 1; i <= 5; i++ {
		if ok, _ := l.allow(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatal("warning within the period let through")
		}
	}
	if ok, n := l.allow(t0.Add(time.Minute)); !ok || n != 5 {
		t.Fatalf("after the period: %v, suppressed %d", ok, n)
	}
}

// TestHeldMessagesKeptAlive: two workers share an export whose sink fails
// for four AckWaits while far more events wait than their batches hold. A
// worker pulls only into a free batch and keeps every batch alive, so no
// message it holds runs out of AckWait: after the fault each event is stored
// once and no message was delivered to a worker twice.
func TestHeldMessagesKeptAlive(t *testing.T) {
	const n = 3000
	e := newEnv(t)
	// Long enough that an InProgress every third of it is not late on a
	// loaded machine (2 s was: a keepalive delayed past 1.3 s redelivered),
	// short enough that the fault outlasts it four times over.
	ackWait := 5 * time.Second
	exp := cwExport("held", "logs.held.>")
	exp.Batch.MaxEvents = 100
	in := testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp.Name))
	until := time.Now().Add(4 * ackWait)
	e.cw.FailFor(4*ackWait, 503)
	for range 2 {
		e.worker(func(c *Config) { c.AckWait, c.CallTimeout = ackWait, ackWait/2 }, exp)
	}
	e.publish(0, n, subjectsN("logs.held", 3), "")
	natstest.Eventually(t, 90*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	if time.Now().Before(until) {
		t.Fatal("delivered before the fault ended; the test proves nothing")
	}
	assertOnce(t, e, exp.Name, n, in)
	if got := testutil.ToFloat64(metrics.ExportEventsIn.WithLabelValues(exp.Name)) - in; got != n {
		t.Fatalf("the workers received %v messages for %d events: some were redelivered", got, n)
	}
}

// TestInvalidDeadLetteredWhileSinkFails: an event that can never be sent
// (empty) is dead-lettered and acked as it is fetched, not after its batch's
// sink call: with every call failing, its dead letter is stored, it is acked
// and counted, while the valid events of its batch stay pending.
func TestInvalidDeadLetteredWhileSinkFails(t *testing.T) {
	e := newEnv(t)
	e.cw.FailFor(time.Hour, http.StatusServiceUnavailable)
	exp := cwExport("deadnow", "logs.dn.>")
	deadBefore := testutil.ToFloat64(metrics.ExportDead.WithLabelValues(exp.Name, events.DeadInvalid))
	retriesBefore := counter(exp.Name, string(events.CodeUnavailable))
	results := e.watchExported()
	e.worker(nil, exp)
	e.publish(0, 3, []string{"logs.dn.a"}, "")
	if _, err := e.js.Publish(context.Background(), "logs.dn.a", nil); err != nil {
		t.Fatal(err)
	}
	e.publish(3, 3, []string{"logs.dn.a"}, "")
	natstest.Eventually(t, 20*time.Second, "the empty event dead-lettered and acked, the others held", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(e.deadLetters()) == 1 && ack == 6 && pending == 0
	})
	if dl := e.deadLetters()[0]; dl.Reason != events.DeadInvalid || dl.Export != exp.Name || dl.Seq != 4 || len(dl.Payload) != 0 {
		t.Fatalf("dead letter %+v", dl)
	}
	if got := testutil.ToFloat64(metrics.ExportDead.WithLabelValues(exp.Name, events.DeadInvalid)); got != deadBefore+1 {
		t.Fatalf("dead invalid counter %v, want %v", got, deadBefore+1)
	}
	natstest.Eventually(t, 10*time.Second, "the dead letter reported", func() bool {
		results.mu.Lock()
		defer results.mu.Unlock()
		for _, ev := range results.events {
			if ev.Export == exp.Name && ev.Dead == 1 && ev.Events == 0 {
				return true
			}
		}
		return false
	})
	// The valid ones are retried, not delivered, and still held.
	natstest.Eventually(t, 20*time.Second, "the sink's calls fail and are retried", func() bool {
		return counter(exp.Name, string(events.CodeUnavailable)) > retriesBefore
	})
	if ack, _ := consumerPending(t, e.js, exp.Name); ack != 6 || len(cwIDs(e.cw)) != 0 {
		t.Fatalf("ack pending %d, stored %d: want the 6 valid events held, none stored", ack, len(cwIDs(e.cw)))
	}
}
