package awsfake

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/smithy-go"
)

const logsKeyID, logsSecret = "AKIDFAKETEST", "s"

func logsFake(t *testing.T) (*Server, *Logs) {
	t.Helper()
	s := New(t)
	s.AddCredentials(Credentials{AccessKeyID: logsKeyID, SecretAccessKey: logsSecret, ARN: "arn:aws:iam::" + DefaultAccount + ":user/logs"})
	return s, s.Logs()
}

func logsClient(l *Logs, akid, secret string) *cloudwatchlogs.Client {
	return cloudwatchlogs.New(cloudwatchlogs.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(l.URL()), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, ""),
	})
}

func evs(n int, at time.Time, step time.Duration, size int) []types.InputLogEvent {
	out := make([]types.InputLogEvent, n)
	for i := range out {
		out[i] = types.InputLogEvent{Timestamp: aws.Int64(at.Add(time.Duration(i) * step).UnixMilli()), Message: aws.String(strings.Repeat("m", size))}
	}
	return out
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestPutLogEventsLimits(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		group    string
		events   []types.InputLogEvent
		wantErr  string
		accepted int
		info     *types.RejectedLogEventsInfo
	}{
		{name: "ok", events: evs(3, now, time.Second, 10), accepted: 3},
		{name: "10000 events ok", events: evs(10000, now, 0, 1), accepted: 10000},
		{name: "10001 events", events: evs(10001, now, 0, 1), wantErr: "InvalidParameterException"},
		{name: "bytes at limit", events: evs(2, now, 0, (LogsMaxBatchBytes-2*LogsEventOverhead)/2), accepted: 2},
		{name: "bytes over limit by one", events: append(evs(1, now, 0, LogsMaxBatchBytes-2*LogsEventOverhead-1), evs(1, now, 0, 2)...), wantErr: "InvalidParameterException"},
		{name: "out of order", events: evs(3, now, -time.Second, 1), wantErr: "InvalidParameterException"},
		{name: "span over 24h", events: evs(2, now.Add(-25*time.Hour), 25*time.Hour, 1), wantErr: "InvalidParameterException"},
		{name: "empty message", events: evs(1, now, 0, 0), wantErr: "InvalidParameterException"},
		{name: "missing group", group: "/missing", events: evs(1, now, 0, 1), wantErr: "ResourceNotFoundException"},
		{name: "too old prefix rejected, rest accepted",
			events:   append(evs(2, now.Add(-14*24*time.Hour-time.Hour), time.Minute, 1), evs(1, now.Add(-14*24*time.Hour+2*time.Hour), 0, 1)...),
			accepted: 1, info: &types.RejectedLogEventsInfo{TooOldLogEventEndIndex: aws.Int32(2)}},
		{name: "too new suffix", events: append(evs(2, now, 0, 1), evs(1, now.Add(3*time.Hour), 0, 1)...), accepted: 2,
			info: &types.RejectedLogEventsInfo{TooNewLogEventStartIndex: aws.Int32(2)}},
	}
	// The limits are the same whether the events are kept or only counted.
	for _, keep := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/keep=%v", tt.name, keep), func(t *testing.T) {
				_, f := logsFake(t)
				f.SetKeepEvents(keep)
				f.CreateStream("/g", "s")
				g := "/g"
				if tt.group != "" {
					g = tt.group
				}
				res, err := logsClient(f, logsKeyID, logsSecret).PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: &g, LogStreamName: aws.String("s"), LogEvents: tt.events})
				if tt.wantErr != "" {
					if apiCode(err) != tt.wantErr {
						t.Fatalf("err = %v, want %s", err, tt.wantErr)
					}
					if f.Count() != 0 {
						t.Fatalf("a refused call stored events")
					}
					return
				}
				if err != nil {
					t.Fatalf("PutLogEvents: %v", err)
				}
				if got := f.Count(); got != tt.accepted {
					t.Fatalf("stored %d, want %d", got, tt.accepted)
				}
				if n := len(f.Events("/g", "s")); keep && n != tt.accepted || !keep && n != 0 {
					t.Fatalf("Events has %d, want %d (kept %v)", n, tt.accepted, keep)
				}
				got := res.RejectedLogEventsInfo
				if (got == nil) != (tt.info == nil) {
					t.Fatalf("rejected info %+v, want %+v", got, tt.info)
				}
				if got != nil && (aws.ToInt32(got.TooOldLogEventEndIndex) != aws.ToInt32(tt.info.TooOldLogEventEndIndex) ||
					aws.ToInt32(got.TooNewLogEventStartIndex) != aws.ToInt32(tt.info.TooNewLogEventStartIndex)) {
					t.Fatalf("rejected info %+v, want %+v", got, tt.info)
				}
			})
		}
	}
}

// Calls one after the other (their bodies and the decoder's memory reused
// between calls) leave the events stored before as they were sent.
func TestLogsStoredEventsIntact(t *testing.T) {
	_, f := logsFake(t)
	f.CreateStream("/g", "s")
	c := logsClient(f, logsKeyID, logsSecret)
	now := time.Now()
	var want []LogEvent
	for call := range 5 {
		batch := make([]types.InputLogEvent, 50)
		for i := range batch {
			ts := now.Add(time.Duration(call*len(batch)+i) * time.Millisecond).UnixMilli()
			msg := fmt.Sprintf("call %d event %d %s", call, i, strings.Repeat(string(rune('a'+call)), 100*(5-call)))
			batch[i] = types.InputLogEvent{Timestamp: aws.Int64(ts), Message: aws.String(msg)}
			want = append(want, LogEvent{Timestamp: ts, Message: msg})
		}
		if _, err := c.PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s"), LogEvents: batch}); err != nil {
			t.Fatalf("call %d: %v", call, err)
		}
	}
	got := f.Events("/g", "s")
	if len(got) != len(want) {
		t.Fatalf("%d events stored, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d is %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLogsInjection(t *testing.T) {
	s, f := logsFake(t)
	f.CreateStream("/g", "s")
	c := logsClient(f, logsKeyID, logsSecret)
	put := func() error {
		_, err := c.PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s"), LogEvents: evs(1, time.Now(), 0, 1)})
		return err
	}
	f.ThrottleFor(time.Hour)
	if err := put(); apiCode(err) != "ThrottlingException" {
		t.Fatalf("err = %v, want ThrottlingException", err)
	}
	f.ThrottleFor(0)
	f.FailFor(time.Hour, 503)
	if err := put(); err == nil {
		t.Fatalf("want a 503")
	}
	f.FailFor(0, 503)
	s.Fail(OpPutLogEvents, "ServiceUnavailableException", 1)
	var re interface{ HTTPStatusCode() int }
	if err := put(); !errors.As(err, &re) || re.HTTPStatusCode() != 503 {
		t.Fatalf("Server.Fail: err = %v, want a 503", err)
	}
	if err := put(); err != nil {
		t.Fatalf("after faults: %v", err)
	}
	calls := f.Calls()
	if len(calls) != 4 || calls[3].AccessKeyID != logsKeyID || calls[3].Error != "" || calls[0].Error != "ThrottlingException" {
		t.Fatalf("calls %+v", calls)
	}
	if s.CallsBy(OpPutLogEvents, logsKeyID) != 4 {
		t.Fatalf("CallsBy = %d", s.CallsBy(OpPutLogEvents, logsKeyID))
	}
}

// CloudWatch Logs calls are SigV4-verified like the other services.
func TestLogsVerifiesSignature(t *testing.T) {
	s, f := logsFake(t)
	f.CreateStream("/g", "s")
	put := func(c *cloudwatchlogs.Client) error {
		_, err := c.PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s"), LogEvents: evs(1, time.Now(), 0, 1)})
		return err
	}
	if err := put(logsClient(f, logsKeyID, "wrong")); apiCode(err) != "InvalidSignatureException" {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := put(logsClient(f, "AKIDUNKNOWN", logsSecret)); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("unknown key: %v", err)
	}
	s.ExpireCredentials(logsKeyID)
	if err := put(logsClient(f, logsKeyID, logsSecret)); apiCode(err) != "ExpiredTokenException" {
		t.Fatalf("expired: %v", err)
	}
	if f.Count() != 0 {
		t.Fatalf("refused calls stored %d events", f.Count())
	}
	if calls := f.Calls(); len(calls) != 3 || calls[1].Error != "UnrecognizedClientException" || calls[1].AccessKeyID != "AKIDUNKNOWN" {
		t.Fatalf("calls %+v", calls)
	}
}

func TestLogsAccessDenied(t *testing.T) {
	s, f := logsFake(t)
	f.CreateGroup("/g", 0)
	s.Deny("arn:aws:iam::"+DefaultAccount+":user/logs", "logs:CreateLogStream", "/g")
	c := logsClient(f, logsKeyID, logsSecret)
	_, err := c.CreateLogStream(context.Background(), &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s")})
	if apiCode(err) != "AccessDeniedException" {
		t.Fatalf("err = %v, want AccessDeniedException", err)
	}
	if _, err := c.CreateLogStream(context.Background(), &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String("/other"), LogStreamName: aws.String("s")}); apiCode(err) != "ResourceNotFoundException" {
		t.Fatalf("other group: %v", err)
	}
}

// CreateLogStream is limited to 50 per second per account by default, as in
// CloudWatch; the clock is frozen so the bucket refills only when it moves.
func TestCreateLogStreamRate(t *testing.T) {
	_, f := logsFake(t)
	var mu sync.Mutex
	now := time.Now()
	f.SetNow(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	f.CreateGroup("/g", 0)
	c := logsClient(f, logsKeyID, logsSecret)
	create := func(i int) error {
		_, err := c.CreateLogStream(context.Background(), &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s" + strings.Repeat("x", i))})
		return err
	}
	for i := 0; i < LogsCreateStreamTPS; i++ {
		if err := create(i); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if err := create(LogsCreateStreamTPS); apiCode(err) != "ThrottlingException" {
		t.Fatalf("create past the limit: %v", err)
	}
	mu.Lock()
	now = now.Add(100 * time.Millisecond) // 5 tokens
	mu.Unlock()
	for i := 0; i < 5; i++ {
		if err := create(100 + i); err != nil {
			t.Fatalf("after refill %d: %v", i, err)
		}
	}
	if err := create(200); apiCode(err) != "ThrottlingException" {
		t.Fatalf("past the refill: %v", err)
	}
	if got := len(f.Streams("/g")); got != LogsCreateStreamTPS+5 {
		t.Fatalf("%d streams", got)
	}
	f.SetCreateStreamRate(0)
	for i := 0; i < 2*LogsCreateStreamTPS; i++ {
		if err := create(300 + i); err != nil {
			t.Fatalf("limit off, create %d: %v", i, err)
		}
	}
}
