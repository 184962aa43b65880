package service

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func TestSealedRepliesOnlyCiphertextOnTheBus(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	// A snooper in a deployment without per-user inbox permissions.
	snoop := natstest.Connect(t, srv)
	seen, err := snoop.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := snoop.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // a miss, then cache hits on the fast path
		got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := got.String("password"); p != "password01" {
			t.Fatalf("the typed client did not open the reply: %+v", got)
		}
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01", Keys: []string{"nokey"}}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("sealed error reply: %v, want not_found", err)
	}
	// Everything on the inboxes (the worker's own KV reads too) is opaque;
	// the four replies to the client are sealed.
	for replies := 0; replies < 4; {
		m, err := seen.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("snooper saw %d replies: %v", replies, err)
		}
		if bytes.Contains(m.Data, []byte("password01")) || bytes.Contains(m.Data, []byte("user01")) {
			t.Fatalf("the snooper read a value: %q %v", m.Data, m.Header)
		}
		if m.Header.Get(events.HeaderRequestID) == "" {
			continue
		}
		replies++
		if m.Header.Get(events.HeaderSenderKey) == "" || bytes.Contains(m.Data, []byte("biodb01")) || bytes.Contains(m.Data, []byte("not_found")) {
			t.Fatalf("a reply not sealed: %q %v", m.Data, m.Header)
		}
	}
	// The audit events say the replies were sealed, and to which key.
	js, _ := jetstream.New(nc)
	// The events are published asynchronously: wait for these four (the
	// walkthrough's own events may be stored before them).
	var sealed int
	natstest.Eventually(t, 10*time.Second, "the 4 sealed resolve events", func() bool {
		sealed = 0
		for id, evs := range auditEvents(t, js) {
			for _, ev := range evs {
				if ev.Op == "resolve" && len(id) > 0 && id[0] != 's' {
					if !ev.Sealed || ev.ReplyKey != c.ReplyKey() {
						t.Fatalf("resolve event %+v: not recorded as sealed to %s", ev, c.ReplyKey())
					}
					sealed++
				}
			}
		}
		return sealed >= 4
	})
	if sealed != 4 {
		t.Fatalf("%d sealed resolve events, want 4", sealed)
	}
}

func TestSealedReplyWrongKeyOrReplayFails(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	mine, _ := nkeys.CreateCurveKeys()
	pub, _ := mine.PublicKey()
	other, _ := nkeys.CreateCurveKeys()
	m := nats.NewMsg(events.Subjects{}.Resolve("bio", "local-bio"))
	m.Data = []byte(`{"secret":"biodb01"}`)
	m.Header.Set(events.HeaderRequestID, "req-1")
	m.Header.Set(events.HeaderReplyKey, pub)
	rep, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sender := rep.Header.Get(events.HeaderSenderKey)
	if !nkeys.IsValidPublicCurveKey(sender) {
		t.Fatalf("sender key %q", sender)
	}
	if _, err := events.OpenReply(other, sender, "req-1", time.Now(), rep.Data); !errors.Is(err, events.ErrSealedReply) {
		t.Fatalf("opened with the wrong key: %v", err)
	}
	if _, err := events.OpenReply(mine, sender, "req-2", time.Now(), rep.Data); !errors.Is(err, events.ErrSealedReply) {
		t.Fatalf("replayed into another request: %v", err)
	}
	if _, err := events.OpenReply(mine, sender, "req-1", time.Now().Add(2*events.SealedReplyTTL), rep.Data); !errors.Is(err, events.ErrSealedReply) {
		t.Fatalf("opened after its expiry: %v", err)
	}
	body, err := events.OpenReply(mine, sender, "req-1", time.Now(), rep.Data)
	if err != nil || !bytes.Contains(body, []byte("password01")) {
		t.Fatalf("opening with the right key: %v %s", err, body)
	}
	// A reply key that is not a curve key: bad_request, nothing sent.
	m.Header.Set(events.HeaderReplyKey, "Xnotakey")
	rep, err = nc.RequestMsg(m, 5*time.Second)
	if err != nil || events.ReplyError(rep) == nil || events.ReplyError(rep).Code != events.CodeBadRequest || bytes.Contains(rep.Data, []byte("password01")) {
		t.Fatalf("bad reply key: %v %s", err, rep.Data)
	}
}

func TestRequireSealedRefusesPlaintext(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	conn := localBio
	conn.RequireSealed = true
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: []byte(`{"login":"user01","password":"password01"}`)}, nil)
	for i := 0; i < 2; i++ { // the second is a cache hit
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatalf("sealed resolve: %v", err)
		}
	}
	plain := c.Unsealed()
	if _, err := resolveReq(plain, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("plaintext resolve of a require_sealed connection: %v, want forbidden", err)
	}
	ctx := t.Context()
	if _, err := plain.Token(ctx, "bio", "local-bio", events.TokenRequest{}); !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("plaintext token of a require_sealed connection: %v, want forbidden", err)
	}
}
