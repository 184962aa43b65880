package export

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// faultyStream fails the PutLogEvents calls of one log stream with err until
// a deadline (CloudWatch throttles per stream); the other calls go to the fake.
type faultyStream struct {
	cloudwatch.API
	stream string
	until  time.Time
	err    error
	failed *atomic.Int64
}

func (s faultyStream) PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	if aws.ToString(in.LogStreamName) == s.stream && time.Now().Before(s.until) {
		s.failed.Add(1)
		return nil, s.err
	}
	return s.API.PutLogEvents(ctx, in, opts...)
}

// faultyFactory builds CloudWatch sinks whose stream fails as f says.
func faultyFactory(f faultyStream) SinkFactory {
	return func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		cfg, _ := testAWSConfig(ctx, conn)
		f.API = cloudwatch.NewClient(cfg, conn)
		return cloudwatch.New(f, exp, zerolog.Nop()), nil
	}
}

// TestRetryResendsOnlyFailedCall: a batch spans two log streams and one
// stream's calls fail for several AckWaits. The other stream's events were
// accepted by the first call: they are acked at once, never redelivered and
// never sent again; the failed stream's events arrive once after the fault.
func TestRetryResendsOnlyFailedCall(t *testing.T) {
	const n = 400
	e := newEnv(t)
	ackWait := time.Second
	var failed atomic.Int64
	until := time.Now().Add(4 * ackWait)
	factory := faultyFactory(faultyStream{stream: "logs.p.b", until: until, failed: &failed,
		err: &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}})
	exp := cwExport("progress", "logs.p.>")
	e.worker(func(c *Config) {
		c.Sinks, c.AckWait, c.RetryMin, c.RetryMax = factory, ackWait, 20*time.Millisecond, 200*time.Millisecond
	}, exp)
	e.publish(0, n, []string{"logs.p.a", "logs.p.b"}, "")
	natstest.Eventually(t, 30*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	if time.Now().Before(until) || failed.Load() == 0 {
		t.Fatalf("the fault did not happen (failed calls %d)", failed.Load())
	}
	dups := 0
	for id, c := range cwIDs(e.cw) {
		if c != 1 {
			dups++
			if dups <= 5 {
				t.Errorf("event %d stored %d times", id, c)
			}
		}
	}
	if dups > 0 {
		t.Fatalf("%d of %d events stored more than once", dups, n)
	}
}

// TestRefusedCallDeadLetters: the sink classifies a call CloudWatch refuses
// for good as dead-letter; the runner dead-letters that call's events as
// rejected (once each, without retrying) and delivers the other stream's.
func TestRefusedCallDeadLetters(t *testing.T) {
	const n = 100
	e := newEnv(t)
	var failed atomic.Int64
	factory := faultyFactory(faultyStream{stream: "logs.r.b", until: time.Now().Add(time.Hour), failed: &failed,
		err: &smithy.GenericAPIError{Code: "InvalidParameterException", Message: "refused"}})
	exp := cwExport("refused", "logs.r.>")
	before := counter(exp.Name, string(events.CodeBadRequest))
	e.worker(func(c *Config) { c.Sinks = factory }, exp)
	e.publish(0, n, []string{"logs.r.a", "logs.r.b"}, "")
	natstest.Eventually(t, 30*time.Second, "half delivered, half dead-lettered, all acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n/2 && len(e.deadLetters()) >= n/2 && ack == 0 && pending == 0
	})
	seen := map[uint64]int{}
	for _, dl := range e.deadLetters() {
		if dl.Export != exp.Name || dl.Subject != "logs.r.b" || dl.Reason != events.DeadRejected {
			t.Fatalf("dead letter %+v", dl)
		}
		seen[dl.Seq]++
	}
	if len(seen) != n/2 {
		t.Fatalf("%d distinct dead letters, want %d", len(seen), n/2)
	}
	if got := counter(exp.Name, string(events.CodeBadRequest)); got != before {
		t.Fatalf("a refused call was retried (%v retries)", got-before)
	}
	for id, c := range cwIDs(e.cw) {
		if c != 1 || id%2 != 0 {
			t.Fatalf("event %d stored %d times", id, c)
		}
	}
}

// hangingStream holds the PutLogEvents calls of one log stream until release
// is closed (or the call's context ends); the other calls go to the fake.
type hangingStream struct {
	cloudwatch.API
	stream  string
	release chan struct{}
	hung    *atomic.Int64
}

func (s hangingStream) PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	if aws.ToString(in.LogStreamName) == s.stream {
		s.hung.Add(1)
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.API.PutLogEvents(ctx, in, opts...)
}

// TestCallAckedBeforeNextCall: one batch spans two log streams; the first
// stream's call succeeds and the second's hangs. The first call's messages
// are acked while the second still hangs (not after the batch's last call),
// so a worker killed then would leave only the hung call's events to be
// redelivered. After the release, every event is stored once.
func TestCallAckedBeforeNextCall(t *testing.T) {
	const n = 100
	e := newEnv(t)
	var hung atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	factory := func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		cfg, _ := testAWSConfig(ctx, conn)
		return cloudwatch.New(hangingStream{API: cloudwatch.NewClient(cfg, conn), stream: "logs.h.b", release: release, hung: &hung},
			exp, zerolog.Nop()), nil
	}
	exp := cwExport("hang", "logs.h.>")
	w := e.worker(func(c *Config) {
		// The hung call must not end by its deadline while the test looks.
		c.Sinks, c.AckWait, c.CallTimeout = factory, 2*time.Minute, time.Minute
	})
	// All in the stream before the export starts: one batch, stream a's
	// call first (its subject comes first), then b's.
	e.publish(0, n, []string{"logs.h.a", "logs.h.b"}, "")
	w.Apply([]events.Export{exp}, e.conns())
	natstest.Eventually(t, 15*time.Second, "stream a's events stored and acked while b's call hangs", func() bool {
		ack, _ := consumerPending(t, e.js, exp.Name)
		return hung.Load() > 0 && len(cwIDs(e.cw)) == n/2 && ack == n/2
	})
	unblock()
	natstest.Eventually(t, 30*time.Second, "every event delivered and acked", func() bool {
		ack, pending := consumerPending(t, e.js, exp.Name)
		return len(cwIDs(e.cw)) == n && ack == 0 && pending == 0
	})
	for id, c := range cwIDs(e.cw) {
		if c != 1 {
			t.Fatalf("event %d stored %d times", id, c)
		}
	}
}
