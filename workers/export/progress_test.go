package export

import (
	"context"
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

// throttledStream throttles the PutLogEvents calls of one log stream until
// a deadline, as CloudWatch does per stream; the other calls go to the fake.
type throttledStream struct {
	cloudwatch.API
	stream string
	until  time.Time
	failed *atomic.Int64
}

func (s throttledStream) PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	if aws.ToString(in.LogStreamName) == s.stream && time.Now().Before(s.until) {
		s.failed.Add(1)
		return nil, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
	}
	return s.API.PutLogEvents(ctx, in, opts...)
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
	factory := func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		cfg, _ := testAWSConfig(ctx, conn)
		api := throttledStream{API: cloudwatch.NewClient(cfg, conn), stream: "logs.p.b", until: until, failed: &failed}
		return cloudwatch.New(api, exp, zerolog.Nop()), nil
	}
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
