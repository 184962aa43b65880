package endpoint_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// recordingAuditor keeps the events published; with a gate, each Publish
// waits until the gate is closed (JetStream hanging).
type recordingAuditor struct {
	required bool
	gate     chan struct{}
	calls    atomic.Int32

	mu       sync.Mutex
	subjects []string
	evs      []*events.AuditEvent
}

func (a *recordingAuditor) Required() bool { return a.required }

func (a *recordingAuditor) Publish(_ context.Context, subject, _ string, ev *events.AuditEvent) error {
	a.calls.Add(1)
	if a.gate != nil {
		<-a.gate
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.subjects = append(a.subjects, subject)
	a.evs = append(a.evs, ev)
	return nil
}

func (a *recordingAuditor) recorded() ([]string, []*events.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.subjects...), append([]*events.AuditEvent(nil), a.evs...)
}

// waitEvents waits for n events.
func (a *recordingAuditor) waitEvents(t *testing.T, n int) ([]string, []*events.AuditEvent) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, "audit events", func() bool {
		_, evs := a.recorded()
		return len(evs) >= n
	})
	return a.recorded()
}

func curveKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

// In required mode an Inline handler (invalidate) takes its audit wait place
// before it runs: with every place taken, the request is refused with
// unavailable and the handler does not run (nothing applied for a request
// answered with an error); the refusal is sealed to the request's reply key
// like any reply.
func TestRequiredAuditInlineTakesItsWaitFirst(t *testing.T) {
	h := newHarness(t, 30*time.Second, 16)
	aud := &recordingAuditor{required: true, gate: make(chan struct{})}
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(aud.gate) }) }
	t.Cleanup(openGate)
	h.runner.SetAudit(endpoint.Audit{Auditor: aud, MaxWaiting: 1})
	hold := uniqueName(t)
	fast := func(micro.Request, *endpoint.Fields) ([]byte, bool) { return []byte(`"hit"`), true }
	h.add(hold, "t.hold", fastOnly(h.runner, hold, fast))
	inv := uniqueName(t)
	var calls atomic.Int32
	h.add(inv, "t.inline", h.runner.Inline(inv, func(context.Context, micro.Request, *endpoint.Fields) (any, error) {
		calls.Add(1)
		return "applied", nil
	}))

	held := make(chan *nats.Msg, 1)
	inbox := nats.NewInbox()
	if _, err := h.nc.ChanSubscribe(inbox, held); err != nil {
		t.Fatal(err)
	}
	if err := h.nc.PublishRequest("t.hold", inbox, nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the one place taken by a reply waiting for its event", func() bool {
		return aud.calls.Load() == 1
	})

	kp, pub := curveKey(t)
	m := nats.NewMsg("t.inline")
	m.Header.Set(events.HeaderReplyKey, pub)
	rep, err := h.nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Header.Get(micro.ErrorCodeHeader); got != strconv.Itoa(events.CodeUnavailable.Number()) {
		t.Fatalf("refused for the backlog: error code %q, want %d", got, events.CodeUnavailable.Number())
	}
	sender := rep.Header.Get(events.HeaderSenderKey)
	if sender == "" {
		t.Fatalf("the backlog refusal is not sealed: %s", rep.Data)
	}
	body, err := events.OpenReply(kp, sender, rep.Header.Get(events.HeaderRequestID), time.Now(), rep.Data)
	if err != nil {
		t.Fatal(err)
	}
	var er events.ErrorReply
	if err := json.Unmarshal(body, &er); err != nil || er.Error == nil || er.Error.Code != events.CodeUnavailable {
		t.Fatalf("sealed refusal %s: %v", body, err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the inline handler ran %d times for a request refused for the audit's backlog", n)
	}
	if n := aud.calls.Load(); n != 1 {
		t.Fatalf("%d audit publishes, want only the waiting one's", n)
	}

	openGate()
	select {
	case m := <-held:
		wantOK(t, m)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request was not answered once its event was stored")
	}
	// Its place is given back just after its reply is sent.
	natstest.Eventually(t, 10*time.Second, "the audit wait place free again", func() bool {
		return h.runner.AuditWaiting() == 0
	})
	wantOK(t, h.request("t.inline", nil))
	if n := calls.Load(); n != 1 {
		t.Fatalf("inline handler ran %d times, want 1", n)
	}
	subjects, evs := aud.waitEvents(t, 2)
	if len(evs) != 2 || evs[1].Op != inv || evs[1].Outcome != "ok" {
		t.Fatalf("events %v %+v", subjects, evs)
	}
	waitCounts(t, inv, map[string]float64{"ok": 1, "unavailable": 1})
}

// The audit event's latency_ms is the duration counted in /metrics and
// $SRV.STATS, in both modes.
func TestAuditLatencyIsTheCountedDuration(t *testing.T) {
	for _, required := range []bool{false, true} {
		h := newHarness(t, 10*time.Second, 4)
		aud := &recordingAuditor{required: required}
		h.runner.SetAudit(endpoint.Audit{Auditor: aud})
		name := uniqueName(t)
		fast := func(micro.Request, *endpoint.Fields) ([]byte, bool) { return []byte(`"hit"`), true }
		h.add(name, "t.latency", fastOnly(h.runner, name, fast))
		var before time.Duration
		for i := 0; i < 20; i++ {
			wantOK(t, h.request("t.latency", nil))
			_, evs := aud.waitEvents(t, i+1)
			st := h.stats(name)
			d := st.ProcessingTime - before
			before = st.ProcessingTime
			if want := float64(d.Microseconds()) / 1000; evs[i].LatencyMS != want {
				t.Fatalf("required %v, request %d: latency_ms %v, counted %v ms", required, i, evs[i].LatencyMS, want)
			}
		}
	}
}

// A reply that cannot be sealed is internal everywhere: the reply, the
// request counter, $SRV.STATS and the audit event (no fingerprint, not
// sealed), in both modes.
func TestSealingFailureIsInternalEverywhere(t *testing.T) {
	for _, required := range []bool{false, true} {
		h := newHarness(t, 10*time.Second, 4)
		aud := &recordingAuditor{required: required}
		h.runner.SetAudit(endpoint.Audit{Auditor: aud})
		name := uniqueName(t)
		// An empty body cannot be sealed.
		fast := func(_ micro.Request, f *endpoint.Fields) ([]byte, bool) {
			f.Audit.Fingerprint = "ab12"
			return []byte{}, true
		}
		h.add(name, "t.seal", fastOnly(h.runner, name, fast))
		_, pub := curveKey(t)
		m := nats.NewMsg("t.seal")
		m.Header.Set(events.HeaderReplyKey, pub)
		rep, err := h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, rep, events.CodeInternal)
		if rep.Header.Get(events.HeaderSenderKey) != "" {
			t.Fatal("an unsealed reply names a sender key")
		}
		waitCounts(t, name, map[string]float64{"internal": 1})
		if st := h.stats(name); st.NumErrors != 1 {
			t.Fatalf("stats %+v, want one error", st)
		}
		_, evs := aud.waitEvents(t, 1)
		if ev := evs[0]; ev.Outcome != string(events.CodeInternal) || ev.Fingerprint != "" || ev.Sealed {
			t.Fatalf("required %v: event outcome %q fingerprint %q sealed %v, want internal, none, false",
				required, ev.Outcome, ev.Fingerprint, ev.Sealed)
		}
	}
}

// A bad reply key's audit event names the group and connection of its
// subject.
func TestBadReplyKeyEventNamesItsConnection(t *testing.T) {
	h := newHarness(t, 10*time.Second, 4)
	aud := &recordingAuditor{}
	h.runner.SetAudit(endpoint.Audit{Auditor: aud})
	var subj events.Subjects
	subject := subj.Resolve("bio", "local-bio")
	fn := func(context.Context, micro.Request, *endpoint.Fields) (any, error) { return "ran", nil }
	h.add(events.OpResolve, subject, h.runner.Handler(events.OpResolve, fn))
	m := nats.NewMsg(subject)
	m.Header.Set(events.HeaderReplyKey, "not-a-key")
	rep, err := h.nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, rep, events.CodeBadRequest)
	subjects, evs := aud.waitEvents(t, 1)
	if subjects[0] != subj.Audit(events.OpResolve, "bio", "local-bio") || evs[0].Group != "bio" || evs[0].Connection != "local-bio" {
		t.Fatalf("event on %s: group %q connection %q", subjects[0], evs[0].Group, evs[0].Connection)
	}
}
