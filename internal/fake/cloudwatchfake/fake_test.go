package cloudwatchfake

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/smithy-go"
)

func client(f *Fake) *cloudwatchlogs.Client {
	return cloudwatchlogs.New(cloudwatchlogs.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(f.URL()), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDFAKETEST", "s", ""),
	})
}

func evs(n int, at time.Time, step time.Duration, size int) []types.InputLogEvent {
	out := make([]types.InputLogEvent, n)
	for i := range out {
		out[i] = types.InputLogEvent{Timestamp: aws.Int64(at.Add(time.Duration(i) * step).UnixMilli()), Message: aws.String(strings.Repeat("m", size))}
	}
	return out
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
		{name: "bytes at limit", events: evs(2, now, 0, (MaxBatchBytes-2*EventOverhead)/2), accepted: 2},
		{name: "bytes over limit by one", events: append(evs(1, now, 0, MaxBatchBytes-2*EventOverhead-1), evs(1, now, 0, 2)...), wantErr: "InvalidParameterException"},
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New()
			defer f.Close()
			f.CreateStream("/g", "s")
			g := "/g"
			if tt.group != "" {
				g = tt.group
			}
			res, err := client(f).PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: &g, LogStreamName: aws.String("s"), LogEvents: tt.events})
			if tt.wantErr != "" {
				var ae smithy.APIError
				if !errors.As(err, &ae) || ae.ErrorCode() != tt.wantErr {
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

func TestInjection(t *testing.T) {
	f := New()
	defer f.Close()
	f.CreateStream("/g", "s")
	c := client(f)
	put := func() error {
		_, err := c.PutLogEvents(context.Background(), &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String("/g"), LogStreamName: aws.String("s"), LogEvents: evs(1, time.Now(), 0, 1)})
		return err
	}
	f.ThrottleFor(time.Hour)
	var ae smithy.APIError
	if err := put(); !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
		t.Fatalf("err = %v, want ThrottlingException", err)
	}
	f.ThrottleFor(0)
	f.FailFor(time.Hour, 503)
	if err := put(); err == nil {
		t.Fatalf("want a 503")
	}
	f.FailFor(0, 503)
	if err := put(); err != nil {
		t.Fatalf("after faults: %v", err)
	}
	calls := f.Calls()
	if len(calls) != 3 || calls[2].AccessKeyID != "AKIDFAKETEST" {
		t.Fatalf("calls %+v", calls)
	}
}
