package endpoint

import (
	"context"
	"encoding/json"
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
