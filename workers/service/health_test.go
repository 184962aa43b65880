package service

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// srvPings counts the cloudbridge instances answering $SRV.PING.
func srvPings(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SRV.PING.cloudbridge", inbox, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := sub.NextMsg(500 * time.Millisecond); err != nil {
			return n
		}
		n++
	}
}

// TestWrongMasterKeyIsNotReady: a worker whose master key cannot open the
// stored records says so in its log, answers /readyz 503 with why, and takes
// no requests (it is not in the queue groups); once the records it cannot
// open are gone, it is ready and takes requests again.
func TestWrongMasterKeyIsNotReady(t *testing.T) {
	srv := natstest.Server(t)
	good := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)

	bad := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	base := "http://" + bad.HTTPAddr()
	code, body := httpGet(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "master key") || !strings.Contains(body, "local-bio") {
		t.Fatalf("/readyz of the worker with the wrong key: %d %q", code, body)
	}
	if !strings.Contains(bad.logs.String(), "worker not ready") || !strings.Contains(bad.logs.String(), "master key") {
		t.Fatal("the worker with the wrong key did not log why it is not ready")
	}
	if code, _ := httpGet(t, "http://"+good.HTTPAddr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz of the good worker: %d", code)
	}
	if n := srvPings(t, nc); n != 1 {
		t.Fatalf("%d instances answer $SRV.PING, want 1 (the worker with the wrong key must not be discoverable)", n)
	}
	// Every request lands on the good worker.
	for i := 0; i < 30; i++ {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01", Fresh: i%2 == 0}); err != nil {
			t.Fatalf("resolve %d: %v", i, err)
		}
	}
	// Without records it cannot open, the worker is ready and serves.
	adminReq(t, c, events.ResourceConnections, events.VerbDelete, events.NameRequest{Name: "local-bio"}, nil)
	natstest.Eventually(t, 10*time.Second, "the worker to become ready", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200 && bad.ServiceID() != ""
	})
	natstest.Eventually(t, 10*time.Second, "both instances to answer $SRV.PING", func() bool { return srvPings(t, nc) == 2 })
}
