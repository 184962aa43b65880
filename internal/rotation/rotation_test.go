package rotation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudbridge/cloudbridge/events"
)

// fakeSource hands out scripted receive results one by one, then blocks
// until ctx is done (like a long poll with nothing to deliver).
type fakeSource struct {
	mu      sync.Mutex
	script  []result
	calls   int
	acked   []string
	closed  bool
	pending chan struct{}
}

type result struct {
	msgs []Message
	err  error
}

func newFake(script ...result) *fakeSource {
	return &fakeSource{script: script, pending: make(chan struct{}, 1)}
}

func (f *fakeSource) push(r result) {
	f.mu.Lock()
	f.script = append(f.script, r)
	f.mu.Unlock()
	select {
	case f.pending <- struct{}{}:
	default:
	}
}

func (f *fakeSource) Receive(ctx context.Context) ([]Message, error) {
	for {
		f.mu.Lock()
		if len(f.script) > 0 {
			r := f.script[0]
			f.script = f.script[1:]
			f.calls++
			f.mu.Unlock()
			return r.msgs, r.err
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.pending:
		}
	}
}

func (f *fakeSource) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeSource) msg(id, typ string, changes ...Change) Message {
	return Message{ID: id, Type: typ, Changes: changes, Ack: func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.acked = append(f.acked, id)
		return nil
	}}
}

func (f *fakeSource) ackedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.acked...)
}

type recorder struct {
	mu      sync.Mutex
	changes []Change
	fail    map[string]int // secret -> failures left
}

func (r *recorder) handle(_ context.Context, c Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail[c.Secret] > 0 {
		r.fail[c.Secret]--
		return errors.New("broadcast failed")
	}
	r.changes = append(r.changes, c)
	return nil
}

func (r *recorder) secrets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, c := range r.changes {
		s = append(s, c.Secret+":"+string(c.Kind))
	}
	return s
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var connSeq atomic.Int64

// uniq makes a connection name unique per run, since metrics are global (-count=N).
func uniq(name string) string { return fmt.Sprintf("%s-%d", name, connSeq.Add(1)) }

func allowDB(s string) bool { return strings.HasPrefix(s, "db/") }

func start(t *testing.T, conn string, src Source, rec *recorder) *Runner {
	t.Helper()
	r := Start(Config{Connection: conn, Source: src, Allowed: allowDB, Handle: rec.handle,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

func ch(secret string, kind Kind, id string, at time.Time) Change {
	return Change{Secret: secret, Kind: kind, ID: id, EventTime: at}
}

func TestDuplicatesReorderedMalformedForeign(t *testing.T) {
	conn := uniq("rot-mixed")
	now := time.Now()
	src := newFake()
	rec := &recorder{}
	start(t, conn, src, rec)
	// Batch 1: e2 before e1 (reordered), e1 duplicated within the batch,
	// one malformed, one foreign, one not a change.
	src.push(result{msgs: []Message{
		src.msg("e2", "PutSecretValue", ch("db/b", Changed, "e2", now)),
		src.msg("e1", "DeleteSecret", ch("db/a", Deleted, "e1", now.Add(-time.Second))),
		src.msg("e1", "DeleteSecret", ch("db/a", Deleted, "e1", now.Add(-time.Second))),
		{ID: "bad", Type: TypeMalformed, Err: errors.New("not JSON"), Ack: src.msg("bad", "").Ack},
		src.msg("f1", "PutSecretValue", ch("other/x", Changed, "f1", now)),
		src.msg("r1", "SECRET_ROTATE"),
	}})
	// Batch 2: e2 redelivered later (SQS at-least-once), then a restore.
	src.push(result{msgs: []Message{
		src.msg("e2", "PutSecretValue", ch("db/b", Changed, "e2", now)),
		src.msg("e3", "RestoreSecret", ch("db/a", Restored, "e3", now.Add(time.Hour))), // clock skew: future
	}})
	eventually(t, "all messages acked", func() bool { return len(src.ackedIDs()) == 8 })
	if got, want := strings.Join(rec.secrets(), ","), "db/b:changed,db/a:deleted,db/a:restored"; got != want {
		t.Fatalf("handled %s, want %s", got, want)
	}
	for _, c := range rec.changes {
		if c.Connection != conn {
			t.Errorf("change %+v: connection not set", c)
		}
	}
	for _, tc := range []struct {
		typ, result string
		want        float64
	}{
		{"PutSecretValue", resultInvalidated, 1},
		{"PutSecretValue", resultDuplicate, 1},
		{"PutSecretValue", resultForeign, 1},
		{"DeleteSecret", resultInvalidated, 1},
		{"DeleteSecret", resultDuplicate, 1},
		{TypeMalformed, resultMalformed, 1},
		{"SECRET_ROTATE", resultIgnored, 1},
		{"RestoreSecret", resultInvalidated, 1},
	} {
		if got := testutil.ToFloat64(metricEvents.WithLabelValues(conn, tc.typ, tc.result)); got != tc.want {
			t.Errorf("events{type=%s,result=%s} = %v, want %v", tc.typ, tc.result, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(metricInvalidations.WithLabelValues(conn, "deleted")); got != 1 {
		t.Errorf("invalidations{deleted} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(metricDelay, "cloudbridge_rotation_delay_seconds"); got == 0 {
		t.Error("no delay observed")
	}
}

func TestHandleFailureLeavesMessageForRedelivery(t *testing.T) {
	src := newFake()
	rec := &recorder{fail: map[string]int{"db/a": 1}}
	conn := uniq("rot-fail")
	start(t, conn, src, rec)
	m := src.msg("e1", "PutSecretValue", ch("db/a", Changed, "e1", time.Now()))
	src.push(result{msgs: []Message{m}})
	eventually(t, "the failed attempt counted", func() bool {
		return testutil.ToFloat64(metricEvents.WithLabelValues(conn, "PutSecretValue", resultFailed)) == 1
	})
	if len(src.ackedIDs()) != 0 {
		t.Fatal("a message whose handling failed was acked")
	}
	src.push(result{msgs: []Message{m}}) // the queue delivers it again; not a duplicate
	eventually(t, "redelivery handled and acked", func() bool { return len(src.ackedIDs()) == 1 })
	if got := rec.secrets(); len(got) != 1 || got[0] != "db/a:changed" {
		t.Fatalf("handled %v", got)
	}
}

func TestQueueDisappearsDegradedThenRecovers(t *testing.T) {
	conn := uniq("rot-degraded")
	src := newFake()
	rec := &recorder{}
	var mu sync.Mutex
	var transitions []bool
	r := Start(Config{Connection: conn, Source: src, Allowed: allowDB, Handle: rec.handle,
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		OnHealth: func(d bool) { mu.Lock(); transitions = append(transitions, d); mu.Unlock() }})
	defer func() { _ = r.Stop(context.Background()) }()
	src.push(result{}) // a successful empty poll
	eventually(t, "first receive", func() bool { return !r.Health().LastReceive.IsZero() })
	if r.Degraded() {
		t.Fatal("degraded after a successful receive")
	}
	gone := errors.New("sqs ReceiveMessage: queue does not exist")
	for i := 0; i < 5; i++ {
		src.push(result{err: gone})
	}
	eventually(t, "degraded", r.Degraded)
	if got := testutil.ToFloat64(metricDegraded.WithLabelValues(conn)); got != 1 {
		t.Errorf("degraded gauge %v, want 1", got)
	}
	eventually(t, "all failures consumed", func() bool {
		return testutil.ToFloat64(metricReceiveErrors.WithLabelValues(conn)) == 5
	})
	if h := r.Health(); !h.Degraded || !errors.Is(h.Cause, gone) {
		t.Errorf("health %+v", h)
	}
	// The queue comes back: the next receive succeeds and carries an event.
	src.push(result{msgs: []Message{src.msg("e1", "PutSecretValue", ch("db/a", Changed, "e1", time.Now()))}})
	eventually(t, "recovered", func() bool { return !r.Degraded() && len(src.ackedIDs()) == 1 })
	if got := testutil.ToFloat64(metricDegraded.WithLabelValues(conn)); got != 0 {
		t.Errorf("degraded gauge %v, want 0", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(transitions) != 2 || !transitions[0] || transitions[1] {
		t.Errorf("OnHealth calls %v, want [true false]", transitions)
	}
}

// panicky panics on its first receive, then serves like fakeSource.
type panicky struct {
	*fakeSource
	once sync.Once
}

func (p *panicky) Receive(ctx context.Context) ([]Message, error) {
	var boom bool
	p.once.Do(func() { boom = true })
	if boom {
		panic("bad input")
	}
	return p.fakeSource.Receive(ctx)
}

func TestPanicsNeverCrashTheRunner(t *testing.T) {
	src := &panicky{fakeSource: newFake()}
	rec := &recorder{}
	r := Start(Config{Connection: "rot-panic", Source: src, Allowed: allowDB,
		Handle: func(ctx context.Context, c Change) error {
			if c.Secret == "db/panic" {
				panic("handler bug")
			}
			return rec.handle(ctx, c)
		},
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	defer func() { _ = r.Stop(context.Background()) }()
	src.push(result{msgs: []Message{
		src.msg("p", "PutSecretValue", ch("db/panic", Changed, "p", time.Time{})),
		src.msg("ok", "PutSecretValue", ch("db/ok", Changed, "ok", time.Time{})),
	}})
	eventually(t, "the good event handled", func() bool { return len(rec.secrets()) == 1 })
}

// blocking never returns from Receive until ctx is done, and ignores nothing else.
type blocking struct{ entered chan struct{} }

func (b blocking) Receive(ctx context.Context) ([]Message, error) {
	close(b.entered)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestStopEndsPromptlyAndCloses(t *testing.T) {
	b := blocking{entered: make(chan struct{})}
	r := Start(Config{Connection: "rot-stop", Source: b, Allowed: allowDB, Handle: (&recorder{}).handle})
	<-b.entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	src := newFake()
	r = Start(Config{Connection: "rot-stop", Source: src, Allowed: allowDB, Handle: (&recorder{}).handle})
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !src.closed {
		t.Error("source not closed by Stop")
	}
}

// A source that ignores ctx must not hang Stop beyond its deadline.
type deaf struct{ release chan struct{} }

func (d deaf) Receive(context.Context) ([]Message, error) { <-d.release; return nil, nil }

func TestStopHonoursItsDeadline(t *testing.T) {
	d := deaf{release: make(chan struct{})}
	r := Start(Config{Connection: "rot-deaf", Source: d, Allowed: allowDB, Handle: (&recorder{}).handle})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop: %v, want DeadlineExceeded", err)
	}
	close(d.release)
	<-r.done
}

func TestDedupWindowAndBound(t *testing.T) {
	d := dedup{window: time.Minute, max: 3, seen: map[string]time.Time{}}
	t0 := time.Unix(1000, 0)
	d.add("a", t0)
	if !d.has("a", t0.Add(59*time.Second)) || d.has("a", t0.Add(time.Minute)) {
		t.Fatal("window not honoured")
	}
	for i, id := range []string{"b", "c", "d"} {
		d.add(id, t0.Add(time.Duration(i+1)*time.Second))
	}
	if d.has("a", t0.Add(5*time.Second)) {
		t.Error("oldest id kept past the bound")
	}
	if !d.has("d", t0.Add(5*time.Second)) || len(d.seen) > 3 {
		t.Errorf("seen %v", d.seen)
	}
	for i := 0; i < 5000; i++ {
		d.add(string(rune('A'+i%26))+time.Duration(i).String(), t0.Add(time.Hour+time.Duration(i)))
	}
	if len(d.seen) > 3 || len(d.order)-d.head > 4 {
		t.Errorf("not bounded: %d seen, %d queued", len(d.seen), len(d.order)-d.head)
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	for n := 1; n < 20; n++ {
		d := backoff(100*time.Millisecond, 2*time.Second, n)
		if d < 50*time.Millisecond || d > 2*time.Second {
			t.Fatalf("backoff(%d) = %s", n, d)
		}
	}
	if d := backoff(100*time.Millisecond, 2*time.Second, 10); d < time.Second {
		t.Errorf("backoff(10) = %s, want at least half the cap", d)
	}
}

type apiErr string

func (e apiErr) Error() string     { return "cloud text: " + string(e) }
func (e apiErr) ErrorCode() string { return string(e) }

// TestCauseClass: receive errors map to wire codes, never to their text. A
// cloud's error code is the provider's to map (its source returns an
// *events.Error): an unmapped one is only unavailable.
func TestCauseClass(t *testing.T) {
	for _, c := range []struct {
		err  error
		want events.Code
	}{
		{nil, ""},
		{fmt.Errorf("setting up the provider: %w", events.Errorf(events.CodeUnauthorized, "aws: no credentials")), events.CodeUnauthorized},
		{events.Wrap(events.CodeForbidden, apiErr("AccessDenied"), "aws: ReceiveMessage: access denied by AWS (AccessDenied)"), events.CodeForbidden},
		{fmt.Errorf("sqs ReceiveMessage: %w", context.DeadlineExceeded), events.CodeTimeout},
		{fmt.Errorf("sqs ReceiveMessage: AccessDenied: %w", apiErr("AccessDenied")), events.CodeUnavailable},
		{errors.New("pubsub Pull: Unavailable"), events.CodeUnavailable},
	} {
		if got := CauseClass(c.err); got != c.want {
			t.Errorf("CauseClass(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
