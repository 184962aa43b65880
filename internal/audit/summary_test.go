package audit

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/schemas"
)

// stored is an event read back from the stream, with its subject.
type stored struct {
	subject string
	ev      events.AuditEvent
}

// auditStream starts an in-process nats-server with an audit stream and
// returns a JetStream context on it.
func auditStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := natstest.Server(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := events.Subjects{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: s.AuditStream(), Subjects: []string{s.AuditWildcard()},
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	return js
}

// readStored reads every event of the audit stream, each checked against
// its schema and decoded strictly.
func readStored(t *testing.T, js jetstream.JetStream) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if err := schemas.Validate("audit-event", m.Data); err != nil {
			t.Fatalf("stored event %s does not match its schema: %v", m.Data, err)
		}
		var ev events.AuditEvent
		if err := events.Decode(m.Data, &ev); err != nil {
			t.Fatalf("stored event %s: %v", m.Data, err)
		}
		out = append(out, stored{m.Subject, ev})
	}
	return out
}

func storedCount(js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Subjects{}.AuditStream())
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// requests is what the stored events of subject with outcome stand for:
// the sum of their counts (1 for an event without one), and how many events.
func requests(evs []stored, subject, outcome string) (n, events int) {
	for _, s := range evs {
		if s.subject != subject || s.ev.Outcome != outcome {
			continue
		}
		events++
		n += max(s.ev.Count, 1)
	}
	return n, events
}

// refusal is a throttled resolve event with request id id, received at t.
func refusal(group, conn, id string, t time.Time) *events.AuditEvent {
	return &events.AuditEvent{Time: t, Op: events.OpResolve, Group: group, Connection: conn, Secret: "s-" + id,
		Outcome: string(events.CodeThrottled), LatencyMS: 0.01, RequestID: id}
}

func stop(t *testing.T, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// 1,000 throttled refusals on one subject within a window are stored as two
// events, the first at once and a summary of the other 999 (count 999, the
// fields of the first of them, until the last), in both modes; another
// subject's refusals are summarised apart; every other outcome is an event of
// its own, even among the refusals. The window is long (an hour), so the
// summaries go out when the publisher stops: before, only the first
// refusals and the other outcomes are stored.
func TestThrottledRefusalsSummarisedPerSubject(t *testing.T) {
	for _, mode := range []Mode{BestEffort, Required} {
		t.Run(string(mode), func(t *testing.T) {
			js := auditStream(t)
			p := New(Config{JS: js, Mode: mode, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
			defer func() { _ = p.Stop(context.Background()) }()
			s := events.Subjects{}
			a, b := s.Audit(events.OpResolve, "bio", "aws-hang"), s.Audit(events.OpResolve, "chem", "aws-hang")
			others := []string{events.OutcomeOK, string(events.CodeNotFound), string(events.CodeForbidden),
				string(events.CodeUnavailable), string(events.CodeTimeout), string(events.CodeBadRequest)}
			summarised0 := Summarised()
			t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
			for i := 0; i < 1000; i++ {
				ctx := context.Background()
				if err := p.Publish(ctx, a, "", refusal("bio", "aws-hang", fmt.Sprintf("a%d", i), t0.Add(time.Duration(i)*time.Millisecond))); err != nil {
					t.Fatal(err)
				}
				if i < 3 {
					if err := p.Publish(ctx, b, "", refusal("chem", "aws-hang", fmt.Sprintf("b%d", i), t0)); err != nil {
						t.Fatal(err)
					}
				}
				if i%100 == 50 {
					ev := refusal("bio", "aws-hang", fmt.Sprintf("o%d", i), t0)
					ev.Outcome = others[(i/100)%len(others)]
					if err := p.Publish(ctx, a, "", ev); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Before Stop: the first refusal of each subject and the 10
			// other outcomes; the rest is pending in two windows.
			natstest.Eventually(t, 10*time.Second, "the events published at once stored", func() bool { return storedCount(js) >= 12 })
			if n := storedCount(js); n != 12 {
				t.Fatalf("%d events stored before the windows ended, want 12 (2 first refusals, 10 other outcomes)", n)
			}
			if n := p.Pending(); n != 2 {
				t.Fatalf("%d subjects pending, want 2", n)
			}
			stop(t, p)
			evs := readStored(t, js)
			if len(evs) != 14 {
				t.Fatalf("%d events stored, want 14 (2 first refusals, 2 summaries, 10 other outcomes)", len(evs))
			}
			if n, k := requests(evs, a, string(events.CodeThrottled)); n != 1000 || k != 2 {
				t.Fatalf("bio: %d events stand for %d refusals, want 2 for 1000", k, n)
			}
			if n, k := requests(evs, b, string(events.CodeThrottled)); n != 3 || k != 2 {
				t.Fatalf("chem: %d events stand for %d refusals, want 2 for 3", k, n)
			}
			for _, e := range evs {
				switch {
				case e.ev.Outcome != string(events.CodeThrottled):
					if e.ev.Count != 0 || e.ev.Until != nil {
						t.Fatalf("outcome %s summarised: %+v", e.ev.Outcome, e.ev)
					}
				case e.ev.Count == 0:
					if e.ev.RequestID != "a0" && e.ev.RequestID != "b0" || e.ev.Until != nil {
						t.Fatalf("the event published at once is not the first refusal's: %+v", e.ev)
					}
				case e.subject == a:
					// The fields of the first refusal counted (a1), until
					// the last (a999).
					if e.ev.Count != 999 || e.ev.RequestID != "a1" || e.ev.Secret != "s-a1" || !e.ev.Time.Equal(t0.Add(time.Millisecond)) ||
						e.ev.Until == nil || !e.ev.Until.Equal(t0.Add(999*time.Millisecond)) || e.ev.Group != "bio" {
						t.Fatalf("bio summary %+v", e.ev)
					}
				default:
					if e.ev.Count != 2 || e.ev.RequestID != "b1" || e.ev.Group != "chem" {
						t.Fatalf("chem summary %+v", e.ev)
					}
				}
			}
			if d := Summarised() - summarised0; d != 999+2 {
				t.Fatalf("cloudbridge_audit_summarised_total grew by %v, want 1001", d)
			}
		})
	}
}

// In required mode a throttled refusal does not wait for the stream (it
// served nothing): Publish returns while the stream does not answer, with
// summaries and without (SummaryWindow negative: each refusal an event of
// its own, through the buffer). The endpoint relies on it: it replies to a
// throttled refusal on the subscription's goroutine.
func TestRequiredDoesNotWaitForThrottled(t *testing.T) {
	for _, window := range []time.Duration{time.Hour, -1} {
		js := &fakeJS{gate: make(chan struct{}), got: make(chan *nats.Msg, 100)}
		p := New(Config{JS: js, Mode: Required, Batch: 1, AckTimeout: time.Hour, Logger: zerolog.Nop(), SummaryWindow: window})
		done := make(chan error, 1)
		go func() {
			for i := 0; i < 100; i++ {
				if err := p.Publish(context.Background(), "cloudbridge.v1.audit.resolve.bio.x", "", refusal("bio", "x", "r", time.Now())); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("required mode, summary window %v: a throttled refusal waited for a stream that does not answer", window)
		}
		// The first refusal waits in the buffer (its batch at the gate),
		// the others in the summary (or the buffer).
		close(js.gate)
		stop(t, p)
		if want := map[bool]int{true: 2, false: 100}[window > 0]; len(js.got) != want {
			t.Fatalf("summary window %v: %d events stored, want %d", window, len(js.got), want)
		}
	}
}

// A window that ends is summarised without Stop (the sweep), and the next
// refusal on its subject is published at once again.
func TestSummaryPublishedWhenTheWindowEnds(t *testing.T) {
	js := auditStream(t)
	p := New(Config{JS: js, Logger: zerolog.Nop(), SummaryWindow: 200 * time.Millisecond})
	defer stop(t, p)
	subject := events.Subjects{}.Audit(events.OpResolve, "bio", "aws-hang")
	for i := 0; i < 11; i++ {
		_ = p.Publish(context.Background(), subject, "", refusal("bio", "aws-hang", fmt.Sprint(i), time.Now()))
	}
	natstest.Eventually(t, 10*time.Second, "the 11 refusals recorded, the summary sent by the sweep", func() bool {
		n, _ := requests(readStored(t, js), subject, string(events.CodeThrottled))
		return n == 11
	})
	evs := readStored(t, js)
	if n, k := requests(evs, subject, string(events.CodeThrottled)); k >= 11 || n != 11 {
		t.Fatalf("%d events for %d refusals: not summarised", k, n)
	}
	natstest.Eventually(t, 10*time.Second, "the ended window removed", func() bool { return p.Pending() == 0 })
	before := len(evs)
	_ = p.Publish(context.Background(), subject, "", refusal("bio", "aws-hang", "late", time.Now()))
	natstest.Eventually(t, 10*time.Second, "the refusal of a new window stored at once", func() bool { return len(readStored(t, js)) == before+1 })
	if last := readStored(t, js)[before]; last.ev.RequestID != "late" || last.ev.Count != 0 {
		t.Fatalf("new window's first refusal %+v", last.ev)
	}
}

// Past MaxSummaries subjects with a window open, a throttled refusal of
// another subject is published on its own and counted; nothing is lost.
func TestSummaryWindowsBounded(t *testing.T) {
	js := auditStream(t)
	p := New(Config{JS: js, Logger: zerolog.Nop(), SummaryWindow: time.Hour, MaxSummaries: 4})
	full0 := SummariesFull()
	s := events.Subjects{}
	subject := func(i int) string { return s.Audit(events.OpResolve, "bio", fmt.Sprintf("c%d", i)) }
	for round := 0; round < 3; round++ {
		for i := 0; i < 10; i++ {
			_ = p.Publish(context.Background(), subject(i), "", refusal("bio", fmt.Sprintf("c%d", i), fmt.Sprintf("r%d-%d", i, round), time.Now()))
		}
	}
	if n := p.Pending(); n != 4 {
		t.Fatalf("%d subjects with a window open, want the bound 4", n)
	}
	if d := SummariesFull() - full0; d != 18 {
		t.Fatalf("cloudbridge_audit_summaries_full_total grew by %v, want 18 (6 subjects past the bound, 3 refusals each)", d)
	}
	stop(t, p)
	evs := readStored(t, js)
	for i := 0; i < 10; i++ {
		n, k := requests(evs, subject(i), string(events.CodeThrottled))
		if want := map[bool]int{true: 2, false: 3}[i < 4]; n != 3 || k != want {
			t.Fatalf("subject %d: %d events for %d refusals, want %d for 3", i, k, n, want)
		}
	}
}

// Stop publishes the summaries of the windows still open, within its
// deadline, and nothing is taken after it.
func TestStopPublishesPendingSummaries(t *testing.T) {
	js := auditStream(t)
	p := New(Config{JS: js, Mode: Required, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
	s := events.Subjects{}
	for i := 0; i < 50; i++ {
		for _, g := range []string{"bio", "chem", "phys"} {
			_ = p.Publish(context.Background(), s.Audit(events.OpResolve, g, "aws"), "", refusal(g, "aws", fmt.Sprint(i), time.Now()))
		}
	}
	natstest.Eventually(t, 10*time.Second, "the first refusals stored", func() bool { return storedCount(js) == 3 })
	stop(t, p)
	stopped0 := Dropped("stopped")
	_ = p.Publish(context.Background(), s.Audit(events.OpResolve, "bio", "aws"), "", refusal("bio", "aws", "late", time.Now()))
	if Dropped("stopped") != stopped0+1 {
		t.Fatal("a refusal after Stop not counted stopped")
	}
	evs := readStored(t, js)
	if len(evs) != 6 {
		t.Fatalf("%d events after Stop, want 6 (3 first refusals, 3 summaries)", len(evs))
	}
	for _, g := range []string{"bio", "chem", "phys"} {
		if n, k := requests(evs, s.Audit(events.OpResolve, g, "aws"), string(events.CodeThrottled)); n != 50 || k != 2 {
			t.Fatalf("%s: %d events for %d refusals, want 2 for 50", g, k, n)
		}
	}
}

// A summary lost counts the throttled requests it stood for (its count) in
// cloudbridge_audit_dropped_total, not one: the requests lost and the
// requests the stored events record add up to the requests, for each
// reason (publish_failed: the batch not stored; buffer_full: the buffer full
// as the sweep puts it in; stopped: Stop's deadline passed first).
func TestLostSummaryCountsItsRequests(t *testing.T) {
	s := events.Subjects{}
	a, b := s.Audit(events.OpResolve, "bio", "aws-hang"), s.Audit(events.OpResolve, "chem", "aws-hang")
	t.Run("publish_failed", func(t *testing.T) {
		// No audit stream: every batch's ack fails, batches of several
		// events (Stop puts both summaries and the other events in at
		// once) as of one.
		js, err := jetstream.New(natstest.Connect(t, natstest.Server(t)))
		if err != nil {
			t.Fatal(err)
		}
		p := New(Config{JS: js, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
		lost0, summarised0 := Dropped("publish_failed"), Summarised()
		for i := 0; i < 300; i++ {
			_ = p.Publish(context.Background(), a, "", refusal("bio", "aws-hang", fmt.Sprint(i), time.Now()))
			if i < 40 {
				_ = p.Publish(context.Background(), b, "", refusal("chem", "aws-hang", fmt.Sprint(i), time.Now()))
			}
			if i%100 == 0 {
				ev := refusal("bio", "aws-hang", fmt.Sprint("ok", i), time.Now())
				ev.Outcome = events.OutcomeOK
				_ = p.Publish(context.Background(), a, "", ev)
			}
		}
		stop(t, p)
		if d := Dropped("publish_failed") - lost0; d != 300+40+3 {
			t.Fatalf("cloudbridge_audit_dropped_total{publish_failed} grew by %v for 343 requests lost (2 of them summaries of 299 and 39)", d)
		}
		if d := Summarised() - summarised0; d != 0 {
			t.Fatalf("lost summaries counted %v summarised", d)
		}
	})
	t.Run("buffer_full", func(t *testing.T) {
		// The stream hangs: the first refusal waits at the gate, an ok
		// event fills the buffer (1); the other refusals, summarised in
		// windows the sweep ends every few milliseconds, are lost with
		// their summaries.
		js := &fakeJS{gate: make(chan struct{}), got: make(chan *nats.Msg, 10)}
		p := New(Config{JS: js, Buffer: 1, Batch: 1, AckTimeout: time.Hour, Logger: zerolog.Nop(), SummaryWindow: 20 * time.Millisecond})
		full0 := Dropped("buffer_full")
		_ = p.Publish(context.Background(), a, "", refusal("bio", "aws-hang", "first", time.Now()))
		natstest.Eventually(t, 10*time.Second, "the first refusal taken by the publishing goroutine", func() bool { return len(p.ch) == 0 })
		ok := refusal("bio", "aws-hang", "ok", time.Now())
		ok.Outcome = events.OutcomeOK
		_ = p.Publish(context.Background(), a, "", ok)
		const n = 500
		for i := 0; i < n; i++ {
			_ = p.Publish(context.Background(), a, "", refusal("bio", "aws-hang", fmt.Sprint(i), time.Now()))
		}
		natstest.Eventually(t, 10*time.Second, "the windows ended and their summaries put in the full buffer", func() bool {
			return p.Pending() == 0 && Dropped("buffer_full")-full0 >= n
		})
		if d := Dropped("buffer_full") - full0; d != n {
			t.Fatalf("cloudbridge_audit_dropped_total{buffer_full} grew by %v for %d refusals lost", d, n)
		}
		close(js.gate)
		stop(t, p)
		if got := len(js.got); got != 2 {
			t.Fatalf("%d events stored, want 2 (the first refusal and the ok event)", got)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		js := &fakeJS{gate: make(chan struct{}), got: make(chan *nats.Msg, 10)}
		p := New(Config{JS: js, Buffer: 1, Batch: 1, AckTimeout: time.Hour, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
		stopped0 := Dropped("stopped")
		_ = p.Publish(context.Background(), a, "", refusal("bio", "aws-hang", "first", time.Now()))
		natstest.Eventually(t, 10*time.Second, "the first refusal taken by the publishing goroutine", func() bool { return len(p.ch) == 0 })
		ok := refusal("bio", "aws-hang", "ok", time.Now())
		ok.Outcome = events.OutcomeOK
		_ = p.Publish(context.Background(), a, "", ok)
		for i := 0; i < 99; i++ {
			_ = p.Publish(context.Background(), a, "", refusal("bio", "aws-hang", fmt.Sprint(i), time.Now()))
		}
		// The buffer is full and the deadline passed: the summary of 99
		// is lost.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Stop(ctx); err == nil {
			t.Fatal("Stop past its deadline with a batch waiting: no error")
		}
		if d := Dropped("stopped") - stopped0; d != 99 {
			t.Fatalf("cloudbridge_audit_dropped_total{stopped} grew by %v for a summary of 99 lost", d)
		}
		close(js.gate)
		stop(t, p)
		if got := len(js.got); got != 2 {
			t.Fatalf("%d events stored, want 2 (the first refusal and the ok event)", got)
		}
	})
}

// A flood of two requesters on one subject is summarised per requester:
// each summary carries its own requester (never the other's), its counts
// add up to that requester's refusals, and no summary carries a reply key
// (each request may have named its own). No requester is a requester too.
func TestThrottledRefusalsSummarisedPerRequester(t *testing.T) {
	js := auditStream(t)
	p := New(Config{JS: js, Logger: zerolog.Nop(), SummaryWindow: time.Hour})
	subject := events.Subjects{}.Audit(events.OpResolve, "bio", "aws-hang")
	victim := &events.Requester{Account: "BIO", User: "alice", Name: "lab", Host: "10.0.0.1"}
	attacker := &events.Requester{Account: "BIO", User: "mallory", Name: "lab", Host: "10.0.0.2"}
	key := "X" + strings.Repeat("A", 55)
	want := map[string]int{"alice": 5, "mallory": 900, "": 7}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 900; i++ {
		for _, r := range []*events.Requester{victim, attacker, nil} {
			name := ""
			if r != nil {
				name = r.User
			}
			if i >= want[name] {
				continue
			}
			ev := refusal("bio", "aws-hang", fmt.Sprintf("%s%d", name, i), t0.Add(time.Duration(i)*time.Millisecond))
			if r != nil {
				c := *r
				ev.Requester = &c
			}
			ev.Sealed, ev.ReplyKey = true, key
			if err := p.Publish(context.Background(), subject, "", ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := p.Pending(); n != 3 {
		t.Fatalf("%d windows open, want 3 (two requesters and none)", n)
	}
	stop(t, p)
	got := map[string]int{}
	summaries := map[string]int{}
	for _, e := range readStored(t, js) {
		name := ""
		if e.ev.Requester != nil {
			name = e.ev.Requester.User
			if r := map[string]*events.Requester{"alice": victim, "mallory": attacker}[name]; r == nil || *e.ev.Requester != *r {
				t.Fatalf("event of requester %+v, want alice's or mallory's", e.ev.Requester)
			}
		}
		if id, ok := strings.CutPrefix(e.ev.RequestID, name); !ok || id == "" || strings.Trim(id, "0123456789") != "" {
			t.Fatalf("event of %q records request %s", name, e.ev.RequestID)
		}
		got[name] += max(e.ev.Count, 1)
		if e.ev.Count == 0 {
			continue
		}
		summaries[name]++
		if e.ev.RequestID != name+"1" {
			t.Fatalf("summary of %q records request %s, want the first counted, %s1", name, e.ev.RequestID, name)
		}
		if e.ev.Sealed || e.ev.ReplyKey != "" {
			t.Fatalf("summary of %q claims a reply key: %+v", name, e.ev)
		}
	}
	for name, n := range want {
		if got[name] != n || summaries[name] != 1 {
			t.Fatalf("requester %q: %d refusals in %d summaries, want %d in 1 (all: %v)", name, got[name], summaries[name], n, got)
		}
	}
}

// syncBuffer is a log sink safe for the publisher's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Past the bound of windows every throttled event warns, but at a rate of
// its own: an event not stored is still logged meanwhile.
func TestTooManyWindowsDoesNotSilenceErrors(t *testing.T) {
	js := auditStream(t)
	var logs syncBuffer
	p := New(Config{JS: js, Mode: Required, Logger: zerolog.New(&logs), SummaryWindow: time.Hour, MaxSummaries: 1})
	defer stop(t, p)
	s := events.Subjects{}
	for i := 0; i < 5; i++ {
		_ = p.Publish(context.Background(), s.Audit(events.OpResolve, "bio", fmt.Sprintf("c%d", i)), "",
			refusal("bio", fmt.Sprintf("c%d", i), fmt.Sprintf("r%d", i), time.Now()))
	}
	if !strings.Contains(logs.String(), "too many subjects") {
		t.Fatalf("no warning past the bound of windows: %s", logs.String())
	}
	// No stream captures this subject: the event is refused.
	ev := refusal("bio", "c0", "ok1", time.Now())
	ev.Outcome = events.OutcomeOK
	if err := p.Publish(context.Background(), "nowhere.audit", "", ev); err == nil {
		t.Fatal("an event no stream captures was stored")
	}
	if !strings.Contains(logs.String(), "audit event not stored: request refused") {
		t.Fatalf("the refused event was not logged while the too-many warning fires: %s", logs.String())
	}
}
