package cloudlogging

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/logging/apiv2/loggingpb"
	ltype "google.golang.org/genproto/googleapis/logging/type"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/loggingfake"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink"
)

func newSink(t *testing.T, truncate bool) (*Sink, *loggingfake.Fake) {
	t.Helper()
	fake, err := loggingfake.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	conn := events.Connection{Name: "gcp-logs", Provider: events.ProviderGCP}
	client, err := NewClient(context.Background(), conn, fake.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	exp := events.Export{Name: "cl-app", Connection: "gcp-logs", Subjects: []string{"logs.>"}, Truncate: truncate,
		CloudLogging: &events.CloudLoggingSink{Project: "my-project", LogID: "app/web",
			Resource: &events.MonitoredResource{Type: "generic_task", Labels: map[string]string{"job": "cloudbridge"}}}}
	s := New(client, exp)
	t.Cleanup(func() { _ = s.Close() })
	return s, fake
}

func parsed(subject string, seq uint64, msg string) logevent.Record {
	return logevent.Record{Event: logevent.Parse([]byte(msg), time.Unix(1795429815, 0)), Subject: subject, Stream: "CLOUDBRIDGE_LOGS", Seq: seq}
}

func TestEntries(t *testing.T) {
	s, fake := newSink(t, false)
	recs := []logevent.Record{
		parsed("logs.app.web", 7, `{"level":"warn","msg":"disk","time":"2026-11-23T10:30:15Z","n":3}`),
		parsed("logs.app.job", 8, "plain text line"),
		parsed("logs.app.job", 9, `{"level":60,"msg":"dead"}`),
	}
	out := make([]logevent.Outcome, len(recs))
	if err := s.Write(context.Background(), recs, out); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := fake.Entries()
	if len(got) != 3 {
		t.Fatalf("%d entries", len(got))
	}
	tests := []struct {
		entry    *loggingpb.LogEntry
		json     bool
		severity ltype.LogSeverity
		insertID string
		subject  string
		at       time.Time
	}{
		{got[0], true, ltype.LogSeverity_WARNING, "CLOUDBRIDGE_LOGS-7", "logs.app.web", time.Date(2026, 11, 23, 10, 30, 15, 0, time.UTC)},
		{got[1], false, ltype.LogSeverity_DEFAULT, "CLOUDBRIDGE_LOGS-8", "logs.app.job", time.Unix(1795429815, 0)},
		{got[2], true, ltype.LogSeverity_CRITICAL, "CLOUDBRIDGE_LOGS-9", "logs.app.job", time.Unix(1795429815, 0)},
	}
	for i, tt := range tests {
		e := tt.entry
		if (e.GetJsonPayload() != nil) != tt.json || (e.GetTextPayload() != "") == tt.json {
			t.Errorf("entry %d: payload kind wrong: %v", i, e.Payload)
		}
		if e.Severity != tt.severity || e.InsertId != tt.insertID || !e.Timestamp.AsTime().Equal(tt.at) {
			t.Errorf("entry %d: severity %v insertId %q time %v", i, e.Severity, e.InsertId, e.Timestamp.AsTime())
		}
		if e.Labels["subject"] != tt.subject || e.Labels["export"] != "cl-app" {
			t.Errorf("entry %d: labels %v", i, e.Labels)
		}
		if e.LogName != "projects/my-project/logs/app%2Fweb" || e.Resource.GetType() != "generic_task" || e.Resource.Labels["job"] != "cloudbridge" {
			t.Errorf("entry %d: log %q resource %v", i, e.LogName, e.Resource)
		}
	}
	if n := got[0].GetJsonPayload().Fields["n"].GetNumberValue(); n != 3 {
		t.Errorf("json field n = %v", n)
	}
	// Redelivery of the same messages does not duplicate.
	out = make([]logevent.Outcome, len(recs))
	if err := s.Write(context.Background(), recs, out); err != nil {
		t.Fatal(err)
	}
	if fake.Count() != 3 || fake.Duplicates() != 3 {
		t.Fatalf("count %d duplicates %d after redelivery", fake.Count(), fake.Duplicates())
	}
}

func TestOutcomes(t *testing.T) {
	big := strings.Repeat("x", MaxEntryBytes)
	tests := []struct {
		name     string
		truncate bool
		msg      string
		reject   string
		status   logevent.Status
		reason   string
	}{
		{name: "ok", msg: "fine", status: logevent.Delivered},
		{name: "per-entry error", msg: "bad entry", reject: "bad", status: logevent.Dead, reason: events.DeadRejected},
		{name: "oversized", msg: big, status: logevent.Dead, reason: events.DeadTooLarge},
		{name: "oversized json", msg: `{"msg":"` + big + `"}`, status: logevent.Dead, reason: events.DeadTooLarge},
		{name: "oversized truncated", truncate: true, msg: big, status: logevent.Delivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake := newSink(t, tt.truncate)
			if tt.reject != "" {
				fake.RejectWhen(func(e *loggingpb.LogEntry) string {
					if strings.Contains(e.GetTextPayload(), tt.reject) {
						return "invalid entry"
					}
					return ""
				})
			}
			recs := []logevent.Record{parsed("logs.a", 1, tt.msg), parsed("logs.a", 2, "companion")}
			out := make([]logevent.Outcome, len(recs))
			if err := s.Write(context.Background(), recs, out); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if out[0].Status != tt.status || out[0].Reason != tt.reason {
				t.Fatalf("outcome %+v, want %d %q", out[0], tt.status, tt.reason)
			}
			if out[1].Status != logevent.Delivered {
				t.Fatalf("companion %+v", out[1])
			}
			want := 1
			if tt.status == logevent.Delivered {
				want = 2
			}
			if fake.Count() != want {
				t.Fatalf("stored %d, want %d", fake.Count(), want)
			}
			if tt.truncate && !strings.HasSuffix(fake.Entries()[0].GetTextPayload(), logevent.TruncateMarker) {
				t.Fatalf("no truncation marker")
			}
		})
	}
}

func TestRequestsWithinLimits(t *testing.T) {
	s, fake := newSink(t, false)
	var recs []logevent.Record
	for i := range 60 {
		recs = append(recs, parsed("logs.a", uint64(i+1), strings.Repeat("y", 250_000)))
	}
	out := make([]logevent.Outcome, len(recs))
	if err := s.Write(context.Background(), recs, out); err != nil {
		t.Fatal(err)
	}
	if fake.Count() != 60 {
		t.Fatalf("stored %d", fake.Count())
	}
	writes := fake.Writes()
	if len(writes) < 2 {
		t.Fatalf("%d requests for 15 MB", len(writes))
	}
	for _, w := range writes {
		if w.Bytes > loggingfake.MaxRequestBytes {
			t.Fatalf("request of %d bytes", w.Bytes)
		}
	}
}

func TestRetryableErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*loggingfake.Fake)
		want  error
		class sink.Class
	}{
		{"resource exhausted", func(f *loggingfake.Fake) { f.ExhaustNext(1) }, events.ErrThrottled, sink.RetryLater},
		{"unavailable", func(f *loggingfake.Fake) { f.FailFor(200 * time.Millisecond) }, events.ErrUnavailable, sink.Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake := newSink(t, false)
			tt.setup(fake)
			recs := []logevent.Record{parsed("logs.a", 1, "m")}
			out := make([]logevent.Outcome, 1)
			err := s.Write(context.Background(), recs, out)
			if f := sink.Classify(err); !errors.Is(err, tt.want) || f.Class != tt.class || len(f.Records) != 1 || f.Records[0] != 0 {
				t.Fatalf("err = %v (class %v, records %v), want %v (%v, [0])", err, f.Class, f.Records, tt.want, tt.class)
			}
			if out[0].Status != logevent.Pending || fake.Count() != 0 {
				t.Fatalf("record %+v, stored %d", out[0], fake.Count())
			}
		})
	}
}
