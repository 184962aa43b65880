package cloudwatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
)

const testKeyID = "AKIDEXPORTTEST0001"

func newSink(t *testing.T, cw events.CloudWatchSink, truncate bool) (*Sink, *awsfake.Logs) {
	t.Helper()
	srv := awsfake.New(t)
	srv.AddCredentials(awsfake.Credentials{AccessKeyID: testKeyID, SecretAccessKey: "secret"})
	fake := srv.Logs()
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, "secret", "")}
	conn := events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, Endpoint: fake.URL()}}
	exp := events.Export{Name: "cw-app", Connection: "aws-logs", Subjects: []string{"logs.>"}, CloudWatch: &cw, Truncate: truncate}
	return New(NewClient(cfg, conn), exp, zerolog.Nop()), fake
}

func rec(subject string, seq uint64, at time.Time, msg string) logevent.Record {
	return logevent.Record{Event: logevent.Event{Time: at, Message: []byte(msg)}, Subject: subject, Stream: "CLOUDBRIDGE_LOGS", Seq: seq}
}

func checkCalls(t *testing.T, fake *awsfake.Logs) {
	t.Helper()
	for i, c := range fake.Calls() {
		if c.Op != "PutLogEvents" {
			continue
		}
		if c.Bytes > MaxBatchBytes || c.Events > MaxBatchEvents || !c.Ordered || time.Duration(c.SpanMS)*time.Millisecond > MaxSpan {
			t.Errorf("call %d over the limits: %+v", i, c)
		}
		if c.AccessKeyID != testKeyID {
			t.Errorf("call %d signed by %q, want %q", i, c.AccessKeyID, testKeyID)
		}
	}
}

func TestWriteObeysLimits(t *testing.T) {
	now := time.Now()
	big := strings.Repeat("b", 100_000)
	tests := []struct {
		name      string
		recs      func() []logevent.Record
		minCalls  int
		wantBytes int // per-call byte ceiling the batch must approach
	}{
		{name: "25000 small events split by count", minCalls: 3, recs: func() []logevent.Record {
			var rs []logevent.Record
			for i := range 25000 {
				rs = append(rs, rec("logs.app.web", uint64(i+1), now.Add(time.Duration(i)*time.Millisecond), "x"))
			}
			return rs
		}},
		{name: "30 events of 100 kB split by bytes", minCalls: 3, recs: func() []logevent.Record {
			var rs []logevent.Record
			for i := range 30 {
				rs = append(rs, rec("logs.app.web", uint64(i+1), now, big))
			}
			return rs
		}},
		{name: "exactly the byte limit in one call", minCalls: 1, recs: func() []logevent.Record {
			// 2 events filling 1,048,576 bytes with their 26-byte overheads.
			half := (MaxBatchBytes - 2*EventOverhead) / 2
			return []logevent.Record{rec("logs.a", 1, now, strings.Repeat("h", half)), rec("logs.a", 2, now, strings.Repeat("h", half))}
		}},
		{name: "out of order is sorted", minCalls: 1, recs: func() []logevent.Record {
			return []logevent.Record{rec("logs.a", 1, now, "3"), rec("logs.a", 2, now.Add(-2*time.Minute), "1"), rec("logs.a", 3, now.Add(-time.Minute), "2")}
		}},
		{name: "span over 24h split", minCalls: 2, recs: func() []logevent.Record {
			return []logevent.Record{rec("logs.a", 1, now.Add(-30*time.Hour), "old"), rec("logs.a", 2, now, "new"), rec("logs.a", 3, now.Add(-29*time.Hour), "old2")}
		}},
		{name: "two subjects two streams", minCalls: 2, recs: func() []logevent.Record {
			return []logevent.Record{rec("logs.a", 1, now, "a"), rec("logs.b", 2, now, "b")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}", Create: true}, false)
			recs := tt.recs()
			out := make([]logevent.Outcome, len(recs))
			if err := s.Write(context.Background(), recs, out); err != nil {
				t.Fatalf("Write: %v", err)
			}
			for i, o := range out {
				if o.Status != logevent.Delivered {
					t.Fatalf("record %d: %+v", i, o)
				}
			}
			if got := fake.Count(); got != len(recs) {
				t.Fatalf("stored %d events, want %d", got, len(recs))
			}
			puts := 0
			for _, c := range fake.Calls() {
				if c.Op == "PutLogEvents" && c.Error == "" {
					puts++
				}
			}
			if puts < tt.minCalls {
				t.Errorf("%d successful calls, want at least %d", puts, tt.minCalls)
			}
			checkCalls(t, fake)
		})
	}
}

func TestWriteOutcomes(t *testing.T) {
	now := time.Now()
	tooLarge := strings.Repeat("L", MaxMessageBytes+1)
	tests := []struct {
		name      string
		retention int
		truncate  bool
		msg       string
		at        time.Time
		status    logevent.Status
		reason    string
	}{
		{name: "accepted", msg: "ok", at: now, status: logevent.Delivered},
		{name: "too old", msg: "old", at: now.Add(-15 * 24 * time.Hour), status: logevent.Dead, reason: events.DeadTooOld},
		{name: "expired", retention: 7, msg: "expired", at: now.Add(-10 * 24 * time.Hour), status: logevent.Dead, reason: events.DeadExpired},
		{name: "too new", msg: "future", at: now.Add(3 * time.Hour), status: logevent.RetryLater},
		{name: "a year ahead", msg: "far future", at: now.AddDate(1, 0, 0), status: logevent.RetryLater},
		{name: "oversized", msg: tooLarge, at: now, status: logevent.Dead, reason: events.DeadTooLarge},
		{name: "oversized truncated", truncate: true, msg: tooLarge, at: now, status: logevent.Delivered},
		{name: "largest allowed", msg: tooLarge[:MaxMessageBytes], at: now, status: logevent.Delivered},
		{name: "empty", msg: "", at: now, status: logevent.Dead, reason: events.DeadInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/g", LogStream: "s"}, tt.truncate)
			fake.CreateGroup("/g", tt.retention)
			fake.CreateStream("/g", "s")
			// A normal event rides along so a partial rejection keeps the rest.
			recs := []logevent.Record{rec("logs.a", 1, tt.at, tt.msg), rec("logs.a", 2, now, "companion")}
			out := make([]logevent.Outcome, len(recs))
			if err := s.Write(context.Background(), recs, out); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if out[0].Status != tt.status || out[0].Reason != tt.reason {
				t.Fatalf("outcome %+v, want status %d reason %q", out[0], tt.status, tt.reason)
			}
			if out[1].Status != logevent.Delivered {
				t.Fatalf("companion not delivered: %+v", out[1])
			}
			stored := fake.Events("/g", "s")
			want := 1
			if tt.status == logevent.Delivered {
				want = 2
			}
			if len(stored) != want {
				t.Fatalf("stored %d events, want %d", len(stored), want)
			}
			if tt.truncate {
				var found bool
				for _, ev := range stored {
					if strings.HasSuffix(ev.Message, logevent.TruncateMarker) && len(ev.Message) <= MaxMessageBytes {
						found = true
					}
				}
				if !found || !out[0].Truncated {
					t.Fatalf("truncated event not stored with marker")
				}
			}
			checkCalls(t, fake)
		})
	}
}

func TestCreateGroupAndStream(t *testing.T) {
	s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}", Create: true, RetentionDays: 30}, false)
	recs := []logevent.Record{rec("logs.app.web", 1, time.Now(), "hello")}
	out := make([]logevent.Outcome, 1)
	if err := s.Write(context.Background(), recs, out); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := fake.Retention("/platform/cw-app"); got != 30 {
		t.Errorf("retention %d, want 30", got)
	}
	if evs := fake.Events("/platform/cw-app", "logs.app.web"); len(evs) != 1 || evs[0].Message != "hello" {
		t.Fatalf("events %+v", evs)
	}
	// A second worker racing to create the same stream is fine.
	s2, _ := newSink(t, events.CloudWatchSink{LogGroup: "/platform/{export}", Create: true}, false)
	s2.api = s.api
	if err := s2.ensure(context.Background(), "/platform/cw-app", "logs.app.web"); err != nil {
		t.Fatalf("ensure on existing: %v", err)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *awsfake.Logs)
		create bool
		want   error
	}{
		{name: "missing group without create", want: events.ErrNotFound},
		{name: "throttled", create: true, setup: func(f *awsfake.Logs) { f.ThrottleNext(1) }, want: events.ErrThrottled},
		{name: "503", create: true, setup: func(f *awsfake.Logs) { f.FailNext(1, http.StatusServiceUnavailable) }, want: events.ErrUnavailable},
		{name: "500", create: true, setup: func(f *awsfake.Logs) { f.FailNext(1, http.StatusInternalServerError) }, want: events.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/g", Create: tt.create}, false)
			if tt.setup != nil {
				tt.setup(fake)
			}
			recs := []logevent.Record{rec("logs.a", 1, time.Now(), "m")}
			out := make([]logevent.Outcome, 1)
			err := s.Write(context.Background(), recs, out)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "fake-request") {
				t.Errorf("error leaks the request id: %v", err)
			}
			if out[0].Status != logevent.Pending {
				t.Fatalf("record not left pending: %+v", out[0])
			}
			// The retry succeeds once the fault is gone.
			if tt.create {
				if err := s.Write(context.Background(), recs, out); err != nil || out[0].Status != logevent.Delivered {
					t.Fatalf("retry: %v %+v", err, out[0])
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		tmpl, subject, group, stream string
	}{
		{"/platform/{export}", "logs.app.web", "/platform/cw-app", "logs.app.web"},
		{"/p/{subject}", "logs.app:1", "/p/logs.app_1", "logs.app_1"},
		{"/p/é {subject}", "logs.*", "/p/__logs._", "logs._"},
		{strings.Repeat("g", 600), "x", strings.Repeat("g", 512), "x"},
		{"", "", "_", "_"},
	}
	for _, tt := range tests {
		if g := GroupName(tt.tmpl, tt.subject, "cw-app"); g != tt.group {
			t.Errorf("GroupName(%q, %q) = %q, want %q", tt.tmpl, tt.subject, g, tt.group)
		}
		if s := StreamName("", tt.subject, "cw-app"); s != tt.stream {
			t.Errorf("StreamName(%q) = %q, want %q", tt.subject, s, tt.stream)
		}
	}
	if s := StreamName("{export}/{subject}", strings.Repeat("é", 300), "e"); len(s) > 512 || !strings.HasPrefix(s, "e/") {
		t.Errorf("long stream name %d bytes", len(s))
	}
}

func ExampleGroupName() {
	fmt.Println(GroupName("/platform/{export}/{subject}", "logs.app.web", "cw-app"))
	// Output: /platform/cw-app/logs.app.web
}

// discardAPI accepts every call without a network, to measure the sink alone.
type discardAPI struct{ API }

func (discardAPI) PutLogEvents(context.Context, *cloudwatchlogs.PutLogEventsInput, ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutLogEventsOutput, error) {
	return &cloudwatchlogs.PutLogEventsOutput{}, nil
}

// BenchmarkWrite: the sink's own cost per event (grouping, sorting, building
// the call), one full call of 200-byte events per op.
func BenchmarkWrite(b *testing.B) {
	s := New(discardAPI{}, events.Export{Name: "bench", CloudWatch: &events.CloudWatchSink{LogGroup: "/g", LogStream: "{subject}"}}, zerolog.Nop())
	now := time.Now()
	n := MaxBatchBytes / (200 + EventOverhead)
	recs := make([]logevent.Record, n)
	for i := range recs {
		recs[i] = rec("logs.app.web", uint64(i), now.Add(time.Duration(i)*time.Microsecond), strings.Repeat("m", 200))
	}
	out := make([]logevent.Outcome, n)
	b.ReportAllocs()
	for b.Loop() {
		clear(out)
		if err := s.Write(context.Background(), recs, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(testing.AllocsPerRun(1, func() { clear(out); _ = s.Write(context.Background(), recs, out) }))/float64(n), "allocs/event")
}

// TestFirstCallToAStreamIsSmall: the first call to a log stream the sink
// has not written to yet carries at most probeEvents events (probeBytes
// bytes), so a missing stream costs a small refused call, not a megabyte;
// once a call went through, the stream's calls are full again. Nothing is
// sent twice and nothing is lost.
func TestFirstCallToAStreamIsSmall(t *testing.T) {
	now := time.Now()
	batch := func(from, n int, size int) []logevent.Record {
		var rs []logevent.Record
		for i := range n {
			rs = append(rs, rec("logs.app.web", uint64(from+i), now.Add(time.Duration(i)*time.Millisecond), strings.Repeat("m", size)))
		}
		return rs
	}
	write := func(t *testing.T, s *Sink, recs []logevent.Record) error {
		t.Helper()
		return s.Write(context.Background(), recs, make([]logevent.Outcome, len(recs)))
	}
	// puts are the PutLogEvents calls from the call at index from on.
	puts := func(fake *awsfake.Logs, from int) (ok, failed []awsfake.LogCall, next int) {
		calls := fake.Calls()
		for _, c := range calls[from:] {
			if c.Op != "PutLogEvents" {
				continue
			}
			if c.Error == "" {
				ok = append(ok, c)
			} else {
				failed = append(failed, c)
			}
		}
		return ok, failed, len(calls)
	}
	t.Run("new stream created", func(t *testing.T) {
		s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}", Create: true}, false)
		if err := write(t, s, batch(1, 4000, 200)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		ok, failed, next := puts(fake, 0)
		if len(failed) != 1 || failed[0].Error != "ResourceNotFoundException" || failed[0].Events != probeEvents {
			t.Fatalf("failed calls %+v, want one refused probe of %d events", failed, probeEvents)
		}
		if len(ok) != 2 || ok[0].Events != probeEvents || ok[1].Events != 4000-probeEvents {
			t.Fatalf("calls %+v, want the probe of %d then the rest", ok, probeEvents)
		}
		if got := len(fake.Events("/platform/cw-app", "logs.app.web")); got != 4000 {
			t.Fatalf("stored %d events, want 4000", got)
		}
		// Known now: the next batch goes in one full call.
		if err := write(t, s, batch(4001, 4000, 200)); err != nil {
			t.Fatalf("second Write: %v", err)
		}
		if ok, failed, _ := puts(fake, next); len(failed) != 0 || len(ok) != 1 || ok[0].Events != 4000 {
			t.Fatalf("second batch's calls %+v (failed %+v), want one of 4000 events", ok, failed)
		}
		checkCalls(t, fake)
	})
	t.Run("existing stream", func(t *testing.T) {
		s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/g", LogStream: "s", Create: true}, false)
		fake.CreateGroup("/g", 0)
		fake.CreateStream("/g", "s")
		if err := write(t, s, batch(1, 3000, 200)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		ok, failed, _ := puts(fake, 0)
		if len(failed) != 0 || len(ok) != 2 || ok[0].Events != probeEvents || ok[1].Events != 3000-probeEvents {
			t.Fatalf("calls %+v (failed %+v), want the probe then the rest", ok, failed)
		}
		for _, c := range fake.Calls() {
			if c.Op != "PutLogEvents" {
				t.Errorf("call %s to an existing stream", c.Op)
			}
		}
		if got := fake.Count(); got != 3000 {
			t.Fatalf("stored %d events, want 3000", got)
		}
	})
	t.Run("missing stream, create off", func(t *testing.T) {
		s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/g", LogStream: "s"}, false)
		// Every attempt (the runner retries) costs one small refused call.
		for range 3 {
			if err := write(t, s, batch(1, 3000, 200)); events.CodeOf(err) != events.CodeNotFound {
				t.Fatalf("Write: %v, want not_found", err)
			}
		}
		ok, failed, _ := puts(fake, 0)
		if len(ok) != 0 || len(failed) != 3 {
			t.Fatalf("calls %+v / %+v, want 3 refused", ok, failed)
		}
		for _, c := range failed {
			if c.Events > probeEvents || c.Bytes > probeBytes {
				t.Fatalf("refused call of %d events, %d bytes: want a probe", c.Events, c.Bytes)
			}
		}
	})
	t.Run("large events", func(t *testing.T) {
		s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/g", LogStream: "s"}, false)
		fake.CreateGroup("/g", 0)
		fake.CreateStream("/g", "s")
		// 40 kB events: the probe stops at probeBytes (one event), a single
		// event over probeBytes still goes (it is at least one).
		if err := write(t, s, batch(1, 20, 40_000)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		ok, _, _ := puts(fake, 0)
		if len(ok) < 2 || ok[0].Events != 1 || ok[0].Bytes > probeBytes {
			t.Fatalf("calls %+v, want a first call of one event within %d bytes", ok, probeBytes)
		}
		s2, fake2 := newSink(t, events.CloudWatchSink{LogGroup: "/g", LogStream: "s"}, false)
		fake2.CreateGroup("/g", 0)
		fake2.CreateStream("/g", "s")
		if err := write(t, s2, batch(1, 3, 100_000)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if ok, _, _ := puts(fake2, 0); len(ok) != 2 || ok[0].Events != 1 || ok[1].Events != 2 {
			t.Fatalf("calls %+v, want 1 then 2 events", ok)
		}
		if got := fake.Count() + fake2.Count(); got != 23 {
			t.Fatalf("stored %d events, want 23", got)
		}
	})
}

// TestOneProbeAtATime: batches delivered side by side to a stream not known
// yet start with one small call between them: the others wait for its
// outcome (or their deadline), then go in full calls.
func TestOneProbeAtATime(t *testing.T) {
	now := time.Now()
	s, fake := newSink(t, events.CloudWatchSink{LogGroup: "/platform/{export}", LogStream: "{subject}", Create: true}, false)
	const writers, each = 4, 3000
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			recs := make([]logevent.Record, each)
			for i := range recs {
				recs[i] = rec("logs.app.web", uint64(w*each+i+1), now.Add(time.Duration(i)*time.Millisecond), strings.Repeat("m", 200))
			}
			errs <- s.Write(context.Background(), recs, make([]logevent.Outcome, len(recs)))
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	small, refused := 0, 0
	for _, c := range fake.Calls() {
		if c.Op != "PutLogEvents" {
			continue
		}
		if c.Error != "" {
			refused++
			continue
		}
		if c.Events < each-probeEvents {
			small++
		}
	}
	if small != 1 || refused > 1 {
		t.Fatalf("%d small calls stored events and %d were refused; want one probe (refused at most once)", small, refused)
	}
	if got := fake.Count(); got != writers*each {
		t.Fatalf("stored %d events, want %d", got, writers*each)
	}

	// A call waiting for another's probe ends with its deadline, sending nothing.
	k := streamKey{"/platform/cw-app", "logs.app.other"}
	if probing, err := s.claim(context.Background(), k); !probing || err != nil {
		t.Fatalf("claim: %v, %v", probing, err)
	}
	calls := len(fake.Calls())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	recs := []logevent.Record{rec("logs.app.other", 1, now, "waits")}
	out := make([]logevent.Outcome, 1)
	if err := s.Write(ctx, recs, out); !errors.Is(err, context.DeadlineExceeded) || out[0].Status != logevent.Pending {
		t.Fatalf("Write behind a probe: %v, outcome %+v; want the deadline, still pending", err, out[0])
	}
	if len(fake.Calls()) != calls {
		t.Fatalf("a call went out while the stream's probe was held")
	}
	s.probed(k)
	if err := s.Write(context.Background(), recs, out); err != nil || out[0].Status != logevent.Delivered {
		t.Fatalf("Write after the probe ended: %v, %+v", err, out[0])
	}
}
