package endpoint

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// A handler that forgets RefuseReplyKey, on a worker that cannot seal, gets
// an internal error for a request with a reply key: not a panic, never the
// plaintext.
func TestReplyWithoutSealerIsInternalNotAPanic(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	r := NewRunner(zerolog.Nop(), 5*time.Second, 4)
	r.xkey, r.xpub = nil, ""
	svc, err := srv.Add(nc, srv.Config{Name: "nilkey", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	const name = "forgetful"
	forgetful := micro.HandlerFunc(func(req micro.Request) {
		var f Fields
		r.finish(name, req, &f, arrival(req), []byte(`"the plaintext"`), nil, replyKey(req))
	})
	if err := svc.AddEndpoint(name, forgetful, srv.WithSubject("nilkey.x")); err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateCurveKeys()
	pub, _ := kp.PublicKey()
	m := nats.NewMsg("nilkey.x")
	m.Header.Set(events.HeaderReplyKey, pub)
	rep, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var er events.ErrorReply
	if err := json.Unmarshal(rep.Data, &er); err != nil || er.Error == nil || er.Error.Code != events.CodeInternal {
		t.Fatalf("reply %s: %v, want internal", rep.Data, err)
	}
	if rep.Header.Get(events.HeaderSenderKey) != "" {
		t.Fatal("an unsealed reply names a sender key")
	}
}

// gatedAuditor is required: Publish of an event other than a throttled
// refusal's waits for gate (JetStream hanging), as internal/audit's does.
type gatedAuditor struct {
	gate     chan struct{}
	outcomes chan string
}

func (a *gatedAuditor) Required() bool { return true }

func (a *gatedAuditor) Publish(_ context.Context, _, _ string, ev *events.AuditEvent) error {
	if ev.Outcome != string(events.CodeThrottled) {
		<-a.gate
	}
	a.outcomes <- ev.Outcome
	return nil
}

// In required mode a throttled refusal is replied on the subscription's
// goroutine only while its outcome stays throttled: one whose reply cannot
// be sealed is internal, its event waited for on a goroutine of its own, so
// finish returns while the stream hangs.
func TestThrottledUnsealableWaitsOffTheSubscription(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	r := NewRunner(zerolog.Nop(), 5*time.Second, 4)
	r.xkey, r.xpub = nil, ""
	aud := &gatedAuditor{gate: make(chan struct{}), outcomes: make(chan string, 1)}
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(aud.gate) }) }
	r.SetAudit(Audit{Auditor: aud})
	svc, err := srv.Add(nc, srv.Config{Name: "nilkey", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	// First (cleanups run last in first out): a handler waiting for the
	// gate would hold svc.Stop.
	t.Cleanup(func() {
		openGate()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Wait(ctx)
	})
	const name = "resolve"
	returned := make(chan struct{}, 1)
	h := micro.HandlerFunc(func(req micro.Request) {
		var f Fields
		r.finish(name, req, &f, arrival(req), nil, events.Errorf(events.CodeThrottled, "lane full"), replyKey(req))
		returned <- struct{}{}
	})
	if err := svc.AddEndpoint(name, h, srv.WithSubject("nilkey.throttled")); err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateCurveKeys()
	pub, _ := kp.PublicKey()
	m := nats.NewMsg("nilkey.throttled")
	m.Header.Set(events.HeaderReplyKey, pub)
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 1)
	if _, err := nc.ChanSubscribe(inbox, replies); err != nil {
		t.Fatal(err)
	}
	m.Reply = inbox
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("finish waited for the audit event of an internal outcome on the subscription's goroutine")
	}
	openGate()
	select {
	case rep := <-replies:
		var er events.ErrorReply
		if err := json.Unmarshal(rep.Data, &er); err != nil || er.Error == nil || er.Error.Code != events.CodeInternal {
			t.Fatalf("reply %s: %v, want internal", rep.Data, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	if got := <-aud.outcomes; got != string(events.CodeInternal) {
		t.Fatalf("audit outcome %q, want internal", got)
	}
}
