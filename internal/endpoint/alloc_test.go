package endpoint

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
)

// allocReq is a request answered in place: the handler's own allocations
// are all a run counts (no connection, no server).
type allocReq struct {
	micro.Request
	subject string
	replies int
}

func (q *allocReq) Data() []byte           { return nil }
func (q *allocReq) Headers() micro.Headers { return nil }
func (q *allocReq) Subject() string        { return q.subject }
func (q *allocReq) Reply() string          { return "_INBOX.alloc" }
func (q *allocReq) Arrived() time.Time     { return time.Now() }
func (q *allocReq) Elapsed() time.Duration { return time.Microsecond }
func (q *allocReq) RespondHeader([]byte, nats.Header) error {
	q.replies++
	return nil
}

func (q *allocReq) ErrorHeader(code, description string, data []byte, hdr nats.Header) error {
	q.replies++
	return nil
}

// countingAuditor is best-effort and keeps nothing: what it costs is the
// runner's building of the event.
type countingAuditor struct{ n atomic.Int64 }

func (a *countingAuditor) Required() bool { return false }
func (a *countingAuditor) Publish(_ context.Context, subject, _ string, ev *events.AuditEvent) error {
	if subject == "" || ev.Outcome == "" {
		panic("audit event without subject or outcome")
	}
	a.n.Add(1)
	return nil
}

// allocsOf is the allocations per request of h, with the runner's audit on
// (a keeping-nothing auditor) and off, in the same run.
func allocsOf(t *testing.T, handler func(r *Runner) micro.Handler, subject string) (on, off float64) {
	t.Helper()
	measure := func(audited bool) float64 {
		r := NewRunner(zerolog.Nop(), 5*time.Second, 4)
		a := &countingAuditor{}
		if audited {
			r.SetAudit(Audit{Auditor: a, Instance: func() string { return "inst" }})
		}
		h := handler(r)
		q := &allocReq{subject: subject}
		h.Handle(q) // warm: the endpoint's state, pools (AllocsPerRun warms once more)
		n := testing.AllocsPerRun(500, func() { h.Handle(q) })
		if q.replies != 502 {
			t.Fatalf("%d replies, want 502", q.replies)
		}
		if audited && a.n.Load() != 502 {
			t.Fatalf("%d audit events, want 502", a.n.Load())
		}
		return n
	}
	return measure(true), measure(false)
}

// The audit event of a request costs the runner few allocations: a cached
// resolve's (answered by the fast path) and a throttled refusal's, printed
// against audit off in the same run.
func TestAuditAllocationsPerRequest(t *testing.T) {
	const subject = "cloudbridge.v1.resolve.bio.local-bio"
	cached := func(r *Runner) micro.Handler {
		return r.Dispatched(events.OpResolve,
			func(req micro.Request, f *Fields) ([]byte, bool) {
				f.Group, f.Conn = "bio", "local-bio"
				f.Audit = AuditFields{Secret: "biodb01", Version: "3", Cached: true, Fingerprint: "ab12"}
				return []byte(`{"value":"x"}`), true
			},
			func(micro.Request, *Fields) (string, error) { return "", nil }, nil, nil, nil)
	}
	throttled := func(r *Runner) micro.Handler {
		refusal := Rendered(events.Errorf(events.CodeThrottled, "too many requests"))
		return r.Limited(events.OpResolve, func(req micro.Request, f *Fields) (func(), error) {
			f.Group, f.Conn = "bio", "local-bio"
			return nil, refusal
		}, nil)
	}
	on, off := allocsOf(t, cached, subject)
	t.Logf("cached resolve: %.0f allocations with audit, %.0f without (%.0f for the audit)", on, off, on-off)
	if on-off > 2 {
		t.Errorf("a cached resolve's audit costs %.0f allocations, want at most 2 (request id, event; its subject is cached)", on-off)
	}
	on, off = allocsOf(t, throttled, subject)
	t.Logf("throttled refusal: %.0f allocations with audit, %.0f without (%.0f for the audit)", on, off, on-off)
	if on-off > 2 {
		t.Errorf("a throttled refusal's audit costs %.0f allocations, want at most 2", on-off)
	}
}

// The cached audit subjects are events.Subjects.Audit's, for every prefix
// set, and past the bound a subject is still right (built each time).
func TestAuditSubjectCache(t *testing.T) {
	var c subjectCache
	s := events.Subjects{}
	for i := 0; i < maxCachedSubjects+10; i++ {
		conn := "c" + strconv.Itoa(i)
		for range 2 {
			if got, want := c.get(s, events.OpResolve, "g", conn), s.Audit(events.OpResolve, "g", conn); got != want {
				t.Fatalf("subject %q, want %q", got, want)
			}
		}
	}
	if n := c.len(); n != maxCachedSubjects {
		t.Fatalf("%d subjects cached, want the bound %d", n, maxCachedSubjects)
	}
	c.reset()
	other := events.Subjects{Prefix: "acme"}
	if got, want := c.get(other, events.OpToken, "g", "c0"), other.Audit(events.OpToken, "g", "c0"); got != want {
		t.Fatalf("after reset: subject %q, want %q", got, want)
	}
}

// recyclingAuditor hands its events back for reuse as internal/audit does
// once it has encoded them: with Audit.NewEvent from it, a request's event
// costs no allocation.
type recyclingAuditor struct {
	countingAuditor
	free []*events.AuditEvent
}

func (a *recyclingAuditor) Publish(ctx context.Context, subject, msgID string, ev *events.AuditEvent) error {
	_ = a.countingAuditor.Publish(ctx, subject, msgID, ev)
	*ev = events.AuditEvent{}
	a.free = append(a.free, ev)
	return nil
}

func (a *recyclingAuditor) newEvent() *events.AuditEvent {
	if n := len(a.free); n > 0 {
		ev := a.free[n-1]
		a.free = a.free[:n-1]
		return ev
	}
	return new(events.AuditEvent)
}

// With Audit.NewEvent reusing the events, a cached resolve's audit costs
// only its request id.
func TestAuditEventsReused(t *testing.T) {
	r := NewRunner(zerolog.Nop(), 5*time.Second, 4)
	a := &recyclingAuditor{}
	r.SetAudit(Audit{Auditor: a, NewEvent: a.newEvent})
	h := r.Dispatched(events.OpResolve,
		func(req micro.Request, f *Fields) ([]byte, bool) {
			f.Group, f.Conn = "bio", "local-bio"
			f.Audit = AuditFields{Secret: "biodb01", Version: "3", Cached: true}
			return []byte(`{"value":"x"}`), true
		},
		func(micro.Request, *Fields) (string, error) { return "", nil }, nil, nil, nil)
	q := &allocReq{subject: "cloudbridge.v1.resolve.bio.local-bio"}
	h.Handle(q)
	on := testing.AllocsPerRun(500, func() { h.Handle(q) })
	r2 := NewRunner(zerolog.Nop(), 5*time.Second, 4)
	off := r2.Dispatched(events.OpResolve,
		func(req micro.Request, f *Fields) ([]byte, bool) { return []byte(`{"value":"x"}`), true },
		func(micro.Request, *Fields) (string, error) { return "", nil }, nil, nil, nil)
	off.Handle(q)
	base := testing.AllocsPerRun(500, func() { off.Handle(q) })
	t.Logf("cached resolve with reused events: %.0f allocations with audit, %.0f without", on, base)
	if on-base > 1 {
		t.Errorf("a cached resolve's audit costs %.0f allocations with reused events, want at most 1 (its request id)", on-base)
	}
	if a.n.Load() != 502 {
		t.Fatalf("%d events, want 502", a.n.Load())
	}
}
