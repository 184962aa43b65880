package service

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
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

// TestSRVStatsTellTheTruth: $SRV.STATS counts the errors of resolve (those
// answered inline in micro's own fields, all of them in its data, as
// /metrics does) and its data's processing time is the real time to reply.
func TestSRVStatsTellTheTruth(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{}
	cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
	cfg.RequestTimeout = 300 * time.Millisecond
	w := startWorker(t, cfg, WithProvider(events.ProviderAWS, cloud.factory))
	nc, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001", SecretAccessKey: "k"}}, nil)
	subject := events.Subjects{}.Resolve("bio", "cloud")
	ask := func(body string) string {
		t.Helper()
		m, err := nc.Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get(events.HeaderErrorCode)
	}
	for i := 0; i < 4; i++ {
		if code := ask(`{"secret":"bad secret"}`); code != "400" { // inline
			t.Fatalf("bad request: code %q", code)
		}
		if code := ask(`{"secret":"missing"}`); code != "404" { // from the provider
			t.Fatalf("missing: code %q", code)
		}
	}
	if code := ask(`{"secret":"db"}`); code != "" {
		t.Fatalf("ok: code %q", code)
	}
	t0 := time.Now()
	if code := ask(`{"secret":"slow"}`); code != "504" {
		t.Fatalf("slow: code %q", code)
	}
	slow := time.Since(t0)

	m, err := nc.Request("$SRV.STATS.cloudbridge."+w.ServiceID(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(m.Data, &stats); err != nil {
		t.Fatal(err)
	}
	var ep *micro.EndpointStats
	for _, e := range stats.Endpoints {
		if e.Name == "resolve" {
			ep = e
		}
	}
	if ep == nil {
		t.Fatalf("no resolve endpoint in %s", m.Data)
	}
	if ep.NumRequests != 10 || ep.NumErrors < 4 {
		t.Fatalf("micro fields: %d requests, %d errors; want 10 and at least the 4 answered inline", ep.NumRequests, ep.NumErrors)
	}
	var data endpoint.Stats
	if err := json.Unmarshal(ep.Data, &data); err != nil {
		t.Fatalf("data %s: %v", ep.Data, err)
	}
	if data.NumRequests != 10 || data.NumErrors != 9 || !strings.HasPrefix(data.LastError, "504:") {
		t.Fatalf("data: %+v, want 10 requests, 9 errors, the last a timeout", data)
	}
	// The slow request's time is in the data; micro's own field saw the hand-off.
	if data.ProcessingTime < cfg.RequestTimeout || data.ProcessingTime > 10*slow {
		t.Fatalf("data processing time %s for a request that took %s (deadline %s)", data.ProcessingTime, slow, cfg.RequestTimeout)
	}
}
