package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

// resolveStats is the resolve endpoint's entry of the worker's $SRV.STATS.
func resolveStats(t *testing.T, nc *nats.Conn, w *worker) micro.EndpointStats {
	t.Helper()
	m, err := nc.Request("$SRV.STATS.cloudbridge."+w.ServiceID(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(m.Data, &stats); err != nil {
		t.Fatal(err)
	}
	for _, e := range stats.Endpoints {
		if e.Name == "resolve" {
			return *e
		}
	}
	t.Fatalf("no resolve endpoint in %s", m.Data)
	return micro.EndpointStats{}
}

// resolveCounts reads the worker's /metrics: cloudbridge_requests_total of
// endpoint resolve by code, and the sum of its request durations.
func resolveCounts(t *testing.T, addr string) (map[string]float64, float64) {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	counts := map[string]float64{}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, `endpoint="resolve"`) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "cloudbridge_requests_total{"):
			_, rest, _ := strings.Cut(name, `code="`)
			c, _, _ := strings.Cut(rest, `"`)
			counts[c] += v
		case strings.HasPrefix(name, "cloudbridge_request_duration_seconds_sum{"):
			sum += v
		}
	}
	return counts, sum
}

// TestSRVStatsTellTheTruth: after N failed and M successful resolves
// (answered inline, on the lane and asynchronously), $SRV.STATS's own fields
// and its endpoint data count every one of them with its real outcome and
// processing time, exactly as /metrics does (nats.go micro, which counts when
// its handler returns, saw only the inline replies' errors and times).
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
	before, sumBefore := resolveCounts(t, w.HTTPAddr())
	subject := events.Subjects{}.Resolve("bio", "cloud")
	ask := func(body string) string {
		t.Helper()
		m, err := nc.Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get(events.HeaderErrorCode)
	}
	const rounds = 4
	for i := 0; i < rounds; i++ {
		if code := ask(`{"secret":"bad secret"}`); code != "400" { // on the lane
			t.Fatalf("bad request: code %q", code)
		}
		if code := ask(`{"secret":"missing"}`); code != "404" { // from the provider
			t.Fatalf("missing: code %q", code)
		}
		if code := ask(fmt.Sprintf(`{"secret":"db%d"}`, i)); code != "" { // a miss, from the provider
			t.Fatalf("ok: code %q", code)
		}
		if code := ask(fmt.Sprintf(`{"secret":"db%d"}`, i)); code != "" { // a hit, on the lane (body new inline)
			t.Fatalf("ok: code %q", code)
		}
		if code := ask(fmt.Sprintf(`{"secret":"db%d"}`, i)); code != "" { // a hit, inline
			t.Fatalf("ok: code %q", code)
		}
	}
	t0 := time.Now()
	if code := ask(`{"secret":"slow"}`); code != "504" {
		t.Fatalf("slow: code %q", code)
	}
	slow := time.Since(t0)
	const errs, oks = 2*rounds + 1, 3 * rounds

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
	// $SRV.STATS's own fields count every reply, asynchronous ones included.
	if ep.NumRequests != errs+oks || ep.NumErrors != errs || !strings.HasPrefix(ep.LastError, "504:") {
		t.Fatalf("$SRV.STATS: %d requests, %d errors, last %q; want %d, %d, a timeout", ep.NumRequests, ep.NumErrors, ep.LastError, errs+oks, errs)
	}
	if ep.ProcessingTime < cfg.RequestTimeout || ep.ProcessingTime > 10*slow ||
		ep.AverageProcessingTime != ep.ProcessingTime/time.Duration(ep.NumRequests) {
		t.Fatalf("$SRV.STATS processing time %s (average %s) for a request that took %s (deadline %s)",
			ep.ProcessingTime, ep.AverageProcessingTime, slow, cfg.RequestTimeout)
	}
	var data endpoint.Stats
	if err := json.Unmarshal(ep.Data, &data); err != nil {
		t.Fatalf("data %s: %v", ep.Data, err)
	}
	if data.NumRequests != errs+oks || data.NumErrors != errs || !strings.HasPrefix(data.LastError, "504:") {
		t.Fatalf("data: %+v, want %d requests, %d errors, the last a timeout", data, errs+oks, errs)
	}
	if data.AverageProcessingTime != data.ProcessingTime/time.Duration(data.NumRequests) {
		t.Fatalf("data: average %s of %s over %d", data.AverageProcessingTime, data.ProcessingTime, data.NumRequests)
	}
	// The slow request's time is in the data.
	if data.ProcessingTime < cfg.RequestTimeout || data.ProcessingTime > 10*slow {
		t.Fatalf("data processing time %s for a request that took %s (deadline %s)", data.ProcessingTime, slow, cfg.RequestTimeout)
	}
	if ep.NumRequests != data.NumRequests || ep.NumErrors != data.NumErrors || ep.LastError != data.LastError ||
		ep.ProcessingTime != data.ProcessingTime {
		t.Fatalf("$SRV.STATS %+v, its data %+v", ep, data)
	}
	// /metrics agrees, request by request and in time.
	after, sumAfter := resolveCounts(t, w.HTTPAddr())
	delta := map[string]float64{}
	for code, v := range after {
		if d := v - before[code]; d != 0 {
			delta[code] = d
		}
	}
	want := map[string]float64{"ok": oks, string(events.CodeBadRequest): rounds, string(events.CodeNotFound): rounds, string(events.CodeTimeout): 1}
	if fmt.Sprint(delta) != fmt.Sprint(want) {
		t.Fatalf("/metrics counted %v, want %v", delta, want)
	}
	if d := time.Duration((sumAfter - sumBefore) * float64(time.Second)); d < data.ProcessingTime-time.Millisecond || d > data.ProcessingTime+time.Millisecond ||
		d < ep.ProcessingTime-time.Millisecond || d > ep.ProcessingTime+time.Millisecond {
		t.Fatalf("/metrics request time %s, $SRV.STATS %s (data %s)", d, ep.ProcessingTime, data.ProcessingTime)
	}
}

// TestStoppedWorkerLeavesSRV: a worker answers $SRV.PING, INFO and STATS on
// all three subject forms (built by micro.ControlSubject) while it runs, and
// none of them once stopped; its endpoints take no more requests.
func TestStoppedWorkerLeavesSRV(t *testing.T) {
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc := natstest.Connect(t, srv)
	id := w.ServiceID()
	verbs := []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb}
	forms := [][2]string{{"", ""}, {Name, ""}, {Name, id}}
	for _, verb := range verbs {
		for _, form := range forms {
			subject, err := micro.ControlSubject(verb, form[0], form[1])
			if err != nil {
				t.Fatal(err)
			}
			m, err := nc.Request(subject, nil, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", subject, err)
			}
			var ident micro.ServiceIdentity
			if err := json.Unmarshal(m.Data, &ident); err != nil || ident.ID != id || ident.Name != Name || ident.Version != Version {
				t.Fatalf("%s: %s: %v", subject, m.Data, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, verb := range verbs {
		for _, form := range forms {
			subject, _ := micro.ControlSubject(verb, form[0], form[1])
			if _, err := nc.Request(subject, nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("%s after Stop: %v", subject, err)
			}
		}
	}
	if _, err := nc.Request(events.Subjects{}.Resolve("bio", "local-bio"), []byte(`{"secret":"x"}`), 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("resolve after Stop: %v", err)
	}
}
