package loggingfake

import (
	"context"
	"strings"
	"testing"

	logging "cloud.google.com/go/logging/apiv2"
	"cloud.google.com/go/logging/apiv2/loggingpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWriteLogEntriesLimits(t *testing.T) {
	entry := func(id, text string) *loggingpb.LogEntry {
		return &loggingpb.LogEntry{InsertId: id, Payload: &loggingpb.LogEntry_TextPayload{TextPayload: text}}
	}
	var many []*loggingpb.LogEntry
	for i := range 45 {
		many = append(many, entry(strings.Repeat("m", 5)+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("x", 250_000)))
	}
	tests := []struct {
		name    string
		entries []*loggingpb.LogEntry
		partial bool
		code    codes.Code
		stored  int
	}{
		{name: "ok", entries: []*loggingpb.LogEntry{entry("1", "a"), entry("2", "b")}, code: codes.OK, stored: 2},
		{name: "duplicate insertId stored once", entries: []*loggingpb.LogEntry{entry("1", "a"), entry("1", "a")}, code: codes.OK, stored: 1},
		{name: "entry over 256 KiB, partial", entries: []*loggingpb.LogEntry{entry("1", strings.Repeat("x", MaxEntryBytes)), entry("2", "b")}, partial: true, code: codes.InvalidArgument, stored: 1},
		{name: "entry over 256 KiB, not partial", entries: []*loggingpb.LogEntry{entry("1", strings.Repeat("x", MaxEntryBytes)), entry("2", "b")}, code: codes.InvalidArgument, stored: 0},
		{name: "request over 10 MB", entries: many, code: codes.InvalidArgument, stored: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c, err := logging.NewClient(context.Background(), f.ClientOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.WriteLogEntries(context.Background(), &loggingpb.WriteLogEntriesRequest{
				LogName: "projects/p/logs/l", Resource: &monitoredres.MonitoredResource{Type: "global"},
				Entries: tt.entries, PartialSuccess: tt.partial,
			}, gax.WithRetry(func() gax.Retryer { return nil }))
			if status.Code(err) != tt.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if f.Count() != tt.stored {
				t.Fatalf("stored %d, want %d", f.Count(), tt.stored)
			}
			if tt.partial {
				st, _ := status.FromError(err)
				found := false
				for _, d := range st.Details() {
					if p, ok := d.(*loggingpb.WriteLogEntriesPartialErrors); ok && p.LogEntryErrors[0] != nil && p.LogEntryErrors[1] == nil {
						found = true
					}
				}
				if !found {
					t.Fatalf("no per-entry error for entry 0: %v", st.Details())
				}
			}
		})
	}
	f, _ := New()
	defer f.Close()
	f.ExhaustNext(1)
	c, _ := logging.NewClient(context.Background(), f.ClientOptions()...)
	defer c.Close()
	_, err := c.WriteLogEntries(context.Background(), &loggingpb.WriteLogEntriesRequest{LogName: "projects/p/logs/l",
		Resource: &monitoredres.MonitoredResource{Type: "global"}, Entries: []*loggingpb.LogEntry{entry("1", "a")}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("want RESOURCE_EXHAUSTED, got %v", err)
	}
}

// TestFaultsByCount: FailNext and ExhaustNext refuse exactly the next n
// calls, whenever they come, and Refused counts them.
func TestFaultsByCount(t *testing.T) {
	f, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := logging.NewClient(context.Background(), f.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	noRetry := gax.WithRetry(func() gax.Retryer { return nil })
	write := func(id string) codes.Code {
		_, err := c.WriteLogEntries(context.Background(), &loggingpb.WriteLogEntriesRequest{LogName: "projects/p/logs/l",
			Resource: &monitoredres.MonitoredResource{Type: "global"},
			Entries:  []*loggingpb.LogEntry{{InsertId: id, Payload: &loggingpb.LogEntry_TextPayload{TextPayload: "a"}}}}, noRetry)
		return status.Code(err)
	}
	f.FailNext(2)
	f.ExhaustNext(1)
	want := []codes.Code{codes.ResourceExhausted, codes.Unavailable, codes.Unavailable, codes.OK}
	for i, w := range want {
		if got := write(string(rune('a' + i))); got != w {
			t.Fatalf("call %d: %v, want %v", i, got, w)
		}
	}
	if u, r := f.Refused(codes.Unavailable), f.Refused(codes.ResourceExhausted); u != 2 || r != 1 {
		t.Fatalf("refused %d unavailable, %d exhausted; want 2, 1", u, r)
	}
}
