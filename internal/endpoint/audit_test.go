package endpoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/audit"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// hangingStream answers JetStream publishes on the audit subjects as the
// stream would (a PubAck), but only once released: until then every publish
// waits, as when JetStream hangs.
type hangingStream struct {
	mu       sync.Mutex
	held     []*nats.Msg
	released bool
}

func (s *hangingStream) serve(t *testing.T, nc *nats.Conn) {
	t.Helper()
	if _, err := nc.Subscribe("cloudbridge.v1.audit.>", func(m *nats.Msg) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.released {
			s.held = append(s.held, m)
			return
		}
		ack(m)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func ack(m *nats.Msg) { _ = m.Respond([]byte(`{"stream":"CLOUDBRIDGE_AUDIT","seq":1}`)) }

func (s *hangingStream) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

func (s *hangingStream) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = true
	for _, m := range s.held {
		ack(m)
	}
	s.held = nil
}

// In required mode, at most MaxWaiting replies wait for their audit event at
// once: with JetStream hanging, the request past the bound is refused at once
// with unavailable (and counted), and once the stream answers the waiting
// ones are served and the bound is free again.
func TestRequiredAuditWaitsAreBounded(t *testing.T) {
	h := newHarness(t, 30*time.Second, 16)
	stream := &hangingStream{}
	stream.serve(t, natstest.Connect(t, h.ns))
	t.Cleanup(stream.release)
	js, err := jetstream.New(natstest.Connect(t, h.ns))
	if err != nil {
		t.Fatal(err)
	}
	pub := audit.New(audit.Config{JS: js, Mode: audit.Required, AckTimeout: 30 * time.Second, Logger: zerolog.Nop()})
	t.Cleanup(func() { _ = pub.Stop(context.Background()) })
	const bound = 3
	h.runner.SetAudit(endpoint.Audit{Auditor: pub, MaxWaiting: bound})
	name := uniqueName(t)
	fast := func(req micro.Request, f *endpoint.Fields) ([]byte, bool) { return []byte(`"hit"`), true }
	h.add(name, "t.required", fastOnly(h.runner, name, fast))

	replies := make(chan *nats.Msg, 2*bound)
	inbox := nats.NewInbox()
	if _, err := h.nc.ChanSubscribe(inbox+".*", replies); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < bound; i++ {
		if err := h.nc.PublishRequest("t.required", fmt.Sprintf("%s.%d", inbox, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "the bound's replies waiting for their audit events", func() bool {
		return stream.waiting() == bound
	})
	full0 := endpoint.AuditWaitsFull()
	// The stream still hangs: this one is refused without waiting for it.
	wantError(t, h.request("t.required", nil), events.CodeUnavailable)
	if got := endpoint.AuditWaitsFull() - full0; got != 1 {
		t.Fatalf("refused for the audit's backlog: counted %v, want 1", got)
	}
	if n := stream.waiting(); n != bound {
		t.Fatalf("%d audit events waiting, want %d (the refused request must not publish one)", n, bound)
	}
	select {
	case m := <-replies:
		t.Fatalf("a waiting request was answered before its audit event was stored: %s", m.Data)
	default:
	}
	stream.release()
	for i := 0; i < bound; i++ {
		select {
		case m := <-replies:
			wantOK(t, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d waiting requests answered once the stream answered", i, bound)
		}
	}
	// The places are given back just after their replies are sent.
	natstest.Eventually(t, 10*time.Second, "the audit wait places free again", func() bool {
		return h.runner.AuditWaiting() == 0
	})
	wantOK(t, h.request("t.required", nil))
	waitCounts(t, name, map[string]float64{"ok": bound + 1, "unavailable": 1})
}

// A bad Cloudbridge-Reply-Key is refused before anything runs for the
// request: not the fast path, the admission, the lane's stage nor the handler
// (a token minted or an invalidate applied for a request answered with an
// error).
func TestBadReplyKeyRefusedBeforeTheHandler(t *testing.T) {
	h := newHarness(t, 10*time.Second, 4)
	var calls atomic.Int32
	fast := func(micro.Request, *endpoint.Fields) ([]byte, bool) { calls.Add(1); return nil, false }
	admit := func(micro.Request, *endpoint.Fields) (func(), error) { calls.Add(1); return func() {}, nil }
	stage := func(micro.Request, *endpoint.Fields) ([]byte, func(), error) {
		calls.Add(1)
		return nil, func() {}, nil
	}
	fn := func(context.Context, micro.Request, *endpoint.Fields) (any, error) { calls.Add(1); return "ran", nil }
	lane := func(micro.Request, *endpoint.Fields) (string, error) { return "", nil }
	full := func(string) error { return events.Errorf(events.CodeThrottled, "full") }
	kp, _ := nkeys.CreateCurveKeys()
	good, _ := kp.PublicKey()
	handlers := map[string]func(name string) micro.Handler{
		"handler":    func(name string) micro.Handler { return h.runner.Handler(name, fn) },
		"limited":    func(name string) micro.Handler { return h.runner.Limited(name, admit, fn) },
		"inline":     func(name string) micro.Handler { return h.runner.Inline(name, fn) },
		"dispatched": func(name string) micro.Handler { return h.runner.Dispatched(name, fast, lane, stage, full, fn) },
	}
	for kind, mk := range handlers {
		name := uniqueName(t)
		subject := "t.key." + kind
		h.add(name, subject, mk(name))
		for _, bad := range []string{"not-a-key", good[:len(good)-1], "U" + good[1:]} {
			m := nats.NewMsg(subject)
			m.Header.Set(events.HeaderReplyKey, bad)
			rep, err := h.nc.RequestMsg(m, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, rep, events.CodeBadRequest)
			if rep.Header.Get(events.HeaderSenderKey) != "" {
				t.Fatalf("%s: a refused key's reply names a sender key", kind)
			}
		}
		// The header given empty: refused, saying so.
		m := nats.NewMsg(subject)
		m.Header[events.HeaderReplyKey] = []string{""}
		rep, err := h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, rep, events.CodeBadRequest)
		if e := rep.Header.Get("Nats-Service-Error"); !strings.Contains(e, "empty") {
			t.Fatalf("%s: an empty reply key header: error %q", kind, e)
		}
		// A good key under a miscased header name is refused too: ignored,
		// the reply would go in the clear to a requester that asked for it
		// sealed.
		m = nats.NewMsg(subject)
		m.Header["cloudbridge-reply-key"] = []string{good}
		rep, err = h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, rep, events.CodeBadRequest)
		if e := rep.Header.Get("Nats-Service-Error"); !strings.Contains(e, events.HeaderReplyKey) || rep.Header.Get(events.HeaderSenderKey) != "" {
			t.Fatalf("%s: a miscased reply key header: error %q, sender key %q", kind, e, rep.Header.Get(events.HeaderSenderKey))
		}
		if n := calls.Load(); n != 0 {
			t.Fatalf("%s: %d calls into the endpoint for requests with a bad reply key", kind, n)
		}
		// A good key goes through and is sealed to.
		m = nats.NewMsg(subject)
		m.Header.Set(events.HeaderReplyKey, good)
		rep, err = h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, rep)
		if rep.Header.Get(events.HeaderSenderKey) == "" || calls.Load() == 0 {
			t.Fatalf("%s: a good key's request: sender key %q, %d calls", kind, rep.Header.Get(events.HeaderSenderKey), calls.Load())
		}
		calls.Store(0)
		waitCounts(t, name, map[string]float64{"ok": 1, "bad_request": 5})
	}
}

// The reply echoes the request's id; one is made up only where something is
// bound to it (an audit event, a sealed reply), so a runner without audit
// sends an unsealed reply without an id the requester did not give.
func TestReplyRequestID(t *testing.T) {
	h := newHarness(t, 10*time.Second, 4)
	name := uniqueName(t)
	fast := func(micro.Request, *endpoint.Fields) ([]byte, bool) { return []byte(`"hit"`), true }
	h.add(name, "t.id", fastOnly(h.runner, name, fast))
	send := func(id, key string) *nats.Msg {
		t.Helper()
		m := nats.NewMsg("t.id")
		if id != "" {
			m.Header.Set(events.HeaderRequestID, id)
		}
		if key != "" {
			m.Header.Set(events.HeaderReplyKey, key)
		}
		rep, err := h.nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, rep)
		return rep
	}
	if got := send("req-1", "").Header.Get(events.HeaderRequestID); got != "req-1" {
		t.Fatalf("given id echoed as %q", got)
	}
	if rep := send("", ""); rep.Header != nil && len(rep.Header) != 0 {
		t.Fatalf("no audit, no id given, unsealed: reply headers %v", rep.Header)
	}
	if got := send("bad id with spaces", "").Header.Get(events.HeaderRequestID); got != "" {
		t.Fatalf("an insane id echoed as %q", got)
	}
	kp, _ := nkeys.CreateCurveKeys()
	pub, _ := kp.PublicKey()
	if got := send("", pub).Header.Get(events.HeaderRequestID); got == "" {
		t.Fatal("a sealed reply without a given id carries no made-up id")
	}
	// With audit, every reply names its request.
	js, err := jetstream.New(natstest.Connect(t, h.ns))
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, 10*time.Second, 4)
	pubr := audit.New(audit.Config{JS: js, Logger: zerolog.Nop()})
	t.Cleanup(func() { _ = pubr.Stop(context.Background()) })
	h2.runner.SetAudit(endpoint.Audit{Auditor: pubr})
	h2.add(name, "t.id", fastOnly(h2.runner, name, fast))
	rep, err := h2.nc.Request("t.id", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Header.Get(events.HeaderRequestID) == "" {
		t.Fatal("with audit, a reply without a given id carries no made-up id")
	}
}

// In required mode a throttled refusal is replied at once, on the
// subscription's goroutine: it takes none of the MaxWaiting places (its event
// is never waited for), so a flood of refusals while every place is held by
// replies waiting on a hanging stream still gets throttled, not unavailable
// for the audit's backlog, sealed to its key like any reply; and the
// refusals are recorded (the first an event, the rest one summary) once the
// stream answers.
func TestRequiredAuditThrottledRefusalsTakeNoWaitPlace(t *testing.T) {
	h := newHarness(t, 30*time.Second, 16)
	stream := &hangingStream{}
	stream.serve(t, natstest.Connect(t, h.ns))
	t.Cleanup(stream.release)
	js, err := jetstream.New(natstest.Connect(t, h.ns))
	if err != nil {
		t.Fatal(err)
	}
	pub := audit.New(audit.Config{JS: js, Mode: audit.Required, AckTimeout: 30 * time.Second, Logger: zerolog.Nop(),
		SummaryWindow: time.Hour})
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = pub.Stop(context.Background())
		}
	})
	const bound = 2
	h.runner.SetAudit(endpoint.Audit{Auditor: pub, MaxWaiting: bound})
	hold := uniqueName(t)
	fast := func(micro.Request, *endpoint.Fields) ([]byte, bool) { return []byte(`"hit"`), true }
	h.add(hold, "t.hold", fastOnly(h.runner, hold, fast))
	name := uniqueName(t)
	full := endpoint.Rendered(events.Errorf(events.CodeThrottled, "%s: at its limit; try again later", name))
	h.add(name, "t.throttled", h.runner.Limited(name, func(micro.Request, *endpoint.Fields) (func(), error) {
		return nil, full
	}, func(context.Context, micro.Request, *endpoint.Fields) (any, error) {
		t.Error("a refused request ran")
		return nil, nil
	}))

	held := make(chan *nats.Msg, bound)
	hinbox := nats.NewInbox()
	if _, err := h.nc.ChanSubscribe(hinbox+".*", held); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < bound; i++ {
		if err := h.nc.PublishRequest("t.hold", fmt.Sprintf("%s.%d", hinbox, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "every audit wait place held by a reply waiting on the stream", func() bool {
		return stream.waiting() == bound && h.runner.AuditWaiting() == bound
	})
	full0 := endpoint.AuditWaitsFull()
	summarised0 := audit.Summarised()

	const n, sealed = 300, 10
	replies := make(chan *nats.Msg, n)
	inbox := nats.NewInbox()
	if _, err := h.nc.ChanSubscribe(inbox+".*", replies); err != nil {
		t.Fatal(err)
	}
	kp, pubKey := curveKey(t)
	for i := 0; i < n; i++ {
		m := nats.NewMsg("t.throttled")
		m.Reply = fmt.Sprintf("%s.%d", inbox, i)
		if i < sealed {
			m.Header.Set(events.HeaderReplyKey, pubKey)
		}
		if err := h.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	var opened int
	for i := 0; i < n; i++ {
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d throttled refusals answered while the audit stream hangs", i, n)
		}
		if sender := m.Header.Get(events.HeaderSenderKey); sender != "" {
			if got := m.Header.Get(micro.ErrorCodeHeader); got != strconv.Itoa(events.CodeThrottled.Number()) {
				t.Fatalf("sealed refusal: error code %q, want throttled (%d)", got, events.CodeThrottled.Number())
			}
			body, err := events.OpenReply(kp, sender, m.Header.Get(events.HeaderRequestID), time.Now(), m.Data)
			if err != nil {
				t.Fatal(err)
			}
			var er events.ErrorReply
			if err := json.Unmarshal(body, &er); err != nil || er.Error == nil || er.Error.Code != events.CodeThrottled {
				t.Fatalf("sealed refusal %s: %v", body, err)
			}
			opened++
			continue
		}
		wantError(t, m, events.CodeThrottled)
	}
	if opened != sealed {
		t.Fatalf("%d sealed refusals, want %d", opened, sealed)
	}
	if d := endpoint.AuditWaitsFull() - full0; d != 0 {
		t.Fatalf("%v throttled refusals refused for the audit's backlog instead", d)
	}
	if w := h.runner.AuditWaiting(); w != bound {
		t.Fatalf("%d audit wait places taken, want the %d held ones only", w, bound)
	}
	select {
	case m := <-held:
		t.Fatalf("a waiting request was answered before its audit event was stored: %s", m.Data)
	default:
	}
	waitCounts(t, name, map[string]float64{"throttled": n})

	stream.release()
	for i := 0; i < bound; i++ {
		select {
		case m := <-held:
			wantOK(t, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d waiting requests answered once the stream answered", i, bound)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped = true
	if err := pub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if d := audit.Summarised() - summarised0; d != n-1 {
		t.Fatalf("the stored summary records %v refusals, want %d (the first an event of its own)", d, n-1)
	}
}
