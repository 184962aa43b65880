package audit

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
)

// A throttled refusal counted into its window's summary costs no allocation
// when its event comes from NewEvent (Publish hands it back), against one for
// a new event each, in the same run; and the summary still holds the fields
// of the first refusal counted, not those of a reused event.
func TestCountedRefusalAllocatesNothing(t *testing.T) {
	js := auditStream(t)
	p := New(Config{JS: js, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
	s := events.Subjects{}
	subject := s.Audit(events.OpResolve, "bio", "aws-hang")
	t0 := time.Now().UTC()
	fill := func(ev *events.AuditEvent, id string) {
		ev.Time, ev.Op, ev.Group, ev.Connection, ev.Secret = t0, events.OpResolve, "bio", "aws-hang", "biodb01"
		ev.Outcome, ev.LatencyMS, ev.RequestID = string(events.CodeThrottled), 0.01, id
	}
	for _, id := range []string{"opens", "first-counted"} {
		ev := NewEvent()
		fill(ev, id)
		if err := p.Publish(context.Background(), subject, "", ev); err != nil {
			t.Fatal(err)
		}
	}
	pooled := testing.AllocsPerRun(500, func() {
		ev := NewEvent()
		fill(ev, "later")
		_ = p.Publish(context.Background(), subject, "", ev)
	})
	fresh := testing.AllocsPerRun(500, func() {
		ev := new(events.AuditEvent)
		fill(ev, "later")
		_ = p.Publish(context.Background(), subject, "", ev)
	})
	t.Logf("throttled refusal counted: %.0f allocations with NewEvent, %.0f with a new event", pooled, fresh)
	if pooled != 0 {
		t.Errorf("a counted refusal from NewEvent costs %.0f allocations, want 0", pooled)
	}
	stop(t, p)
	evs := readStored(t, js)
	if len(evs) != 2 {
		t.Fatalf("%d events stored, want 2 (the first refusal, the summary)", len(evs))
	}
	first, sum := evs[0].ev, evs[1].ev
	if first.RequestID != "opens" || first.Count != 0 {
		t.Fatalf("first event %+v, want request opens on its own", first)
	}
	if sum.RequestID != "first-counted" || sum.Secret != "biodb01" || sum.Group != "bio" || sum.Count != 1+501+501 {
		t.Fatalf("summary %+v, want the first counted refusal's fields with count 1003", sum)
	}
}
