package cloudwatch

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

// faultyStream injects a fault into the fake (through the real SDK client)
// just before the PutLogEvents call of one log stream.
type faultyStream struct {
	API
	stream string
	inject func(in *cloudwatchlogs.PutLogEventsInput)
}

func (f faultyStream) PutLogEvents(ctx context.Context, in *cloudwatchlogs.PutLogEventsInput, opts ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	if aws.ToString(in.LogStreamName) == f.stream {
		f.inject(in)
	}
	return f.API.PutLogEvents(ctx, in, opts...)
}

// TestFailedCallIsClassified checks that a failed call of a batch spanning
// two log streams leaves the other stream's records delivered, its own
// pending, and is classified for the runner: throttled → retry later, 5xx →
// retry, a refused request → dead-letter; the sink never retries itself.
func TestFailedCallIsClassified(t *testing.T) {
	tests := []struct {
		name   string
		inject func(*awsfake.Logs, *cloudwatchlogs.PutLogEventsInput)
		class  sink.Class
		code   error
	}{
		{"throttled", func(f *awsfake.Logs, _ *cloudwatchlogs.PutLogEventsInput) { f.ThrottleNext(1) }, sink.RetryLater, events.ErrThrottled},
		{"5xx", func(f *awsfake.Logs, _ *cloudwatchlogs.PutLogEventsInput) {
			f.FailNext(1, http.StatusServiceUnavailable)
		}, sink.Retry, events.ErrUnavailable},
		{"refused", func(_ *awsfake.Logs, in *cloudwatchlogs.PutLogEventsInput) {
			in.LogStreamName = aws.String("bad:name")
		}, sink.DeadLetter, events.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := awsfake.New(t)
			srv.AddCredentials(awsfake.Credentials{AccessKeyID: testKeyID, SecretAccessKey: "secret"})
			fake := srv.Logs()
			fake.CreateGroup("/platform/cw-app", 0)
			fake.CreateStream("/platform/cw-app", "logs.a")
			fake.CreateStream("/platform/cw-app", "logs.b")
			cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, "secret", "")}
			conn := events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, Endpoint: fake.URL()}}
			exp := events.Export{Name: "cw-app", CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}"}}
			api := faultyStream{API: NewClient(cfg, conn), stream: "logs.b", inject: func(in *cloudwatchlogs.PutLogEventsInput) { tt.inject(fake, in) }}
			s := New(api, exp, zerolog.Nop())
			now := time.Now()
			recs := []logevent.Record{rec("logs.a", 1, now, "a1"), rec("logs.b", 2, now, "b1"), rec("logs.a", 3, now, "a2"), rec("logs.b", 4, now, "b2")}
			out := make([]logevent.Outcome, len(recs))
			err := s.Write(context.Background(), recs, out)
			f := sink.Classify(err)
			if err == nil || f.Class != tt.class || !errors.Is(err, tt.code) || !slices.Equal(f.Records, []int{1, 3}) {
				t.Fatalf("Write = %v: class %v, records %v; want %v %v of records [1 3]", err, f.Class, f.Records, tt.class, tt.code)
			}
			want := []logevent.Status{logevent.Delivered, logevent.Pending, logevent.Delivered, logevent.Pending}
			for i, o := range out {
				if o.Status != want[i] {
					t.Errorf("record %d: %v, want %v", i, o.Status, want[i])
				}
			}
			if n := len(fake.Events("/platform/cw-app", "logs.a")); n != 2 {
				t.Errorf("stream logs.a has %d events, want 2", n)
			}
			puts := 0
			for _, c := range fake.Calls() {
				if c.Op == "PutLogEvents" {
					puts++
				}
			}
			if puts != 2 {
				t.Errorf("%d PutLogEvents calls, want 2 (no retry in the sink)", puts)
			}
		})
	}
}
