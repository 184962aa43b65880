package cloudwatch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"

	"github.com/cloudbridge/cloudbridge/events"
)

// trickyMessages are messages whose JSON strings need escaping.
var trickyMessages = []string{
	"", "plain", `{"level":"info","msg":"a \"quoted\" \\ word"}`, "tab\there\nnew line\rreturn",
	"\x00\x01\x1f\x7f control", "héllo wörld ✓ 日本語 🙂", "\u2028\u2029 separators",
	"bad \xff utf-8 \xc3", "\xed\xa0\x80 surrogate", "</script>&<>", strings.Repeat(`"\`, 300),
}

// TestPutLogEventsBodyMatchesSDK sends the same PutLogEvents through the
// sink's client and through the SDK's own serializer: the bodies decode to
// the same JSON value and the requests carry the same operation headers.
func TestPutLogEventsBodyMatchesSDK(t *testing.T) {
	type got struct {
		body   any
		target string
		ctype  string
	}
	var mu sync.Mutex
	var reqs []got
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("body is not JSON: %v: %q", err, b)
		}
		mu.Lock()
		reqs = append(reqs, got{v, r.Header.Get("X-Amz-Target"), r.Header.Get("Content-Type")})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, "secret", "")}
	conn := events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, AWS: &events.AWSConfig{Region: "us-east-1", Endpoint: srv.URL}}
	ours := NewClient(cfg, conn)
	sdk := cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) {
		o.Retryer = aws.NopRetryer{}
		o.BaseEndpoint = aws.String(srv.URL)
	})
	ts := int64(1_700_000_000_123)
	inputs := []*cloudwatchlogs.PutLogEventsInput{
		{LogGroupName: aws.String("/platform/\"g\""), LogStreamName: aws.String("s\\1"), LogEvents: []types.InputLogEvent{}},
		{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), SequenceToken: aws.String("tok"), LogEvents: func() []types.InputLogEvent {
			var evs []types.InputLogEvent
			for i, m := range trickyMessages {
				at := ts + int64(i)
				evs = append(evs, types.InputLogEvent{Message: aws.String(m), Timestamp: &at})
			}
			return evs
		}()},
	}
	for i, in := range inputs {
		for _, c := range []*cloudwatchlogs.Client{ours, sdk} {
			if _, err := c.PutLogEvents(context.Background(), in); err != nil {
				t.Fatalf("input %d: %v", i, err)
			}
		}
	}
	if len(reqs) != 2*len(inputs) {
		t.Fatalf("%d requests, want %d", len(reqs), 2*len(inputs))
	}
	for i := range inputs {
		o, s := reqs[2*i], reqs[2*i+1]
		if !reflect.DeepEqual(o, s) {
			t.Errorf("input %d: ours %+v\nSDK's %+v", i, o, s)
		}
	}
}
