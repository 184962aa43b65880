package service

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	gcpprov "github.com/cloudbridge/cloudbridge/internal/provider/gcp"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// rotationPubSub is Google's in-memory Pub/Sub server with the topic a
// secret's event notifications go to and a subscription on it, next to the
// Secret Manager fake.
type rotationPubSub struct {
	ps     *pstest.Server
	fake   *gcpfake.Server
	reader *gcpfake.ServiceAccount
	topic  string
	sub    string
}

func newRotationPubSub(t testing.TB) *rotationPubSub {
	t.Helper()
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	ps := pstest.NewServer()
	t.Cleanup(func() { _ = ps.Close() })
	fake := gcpfake.New(t)
	e := &rotationPubSub{ps: ps, fake: fake, reader: fake.AddServiceAccount("reader@bio-prod.iam.gserviceaccount.com"),
		topic: "projects/bio-prod/topics/secret-changes", sub: "projects/bio-prod/subscriptions/secret-changes"}
	if _, err := ps.GServer.CreateTopic(tctx(t), &pubsubpb.Topic{Name: e.topic}); err != nil {
		t.Fatal(err)
	}
	e.createSub(t)
	return e
}

func (e *rotationPubSub) createSub(t testing.TB) {
	t.Helper()
	if _, err := e.ps.GServer.CreateSubscription(tctx(t), &pubsubpb.Subscription{Name: e.sub, Topic: e.topic, AckDeadlineSeconds: 30}); err != nil {
		t.Fatal(err)
	}
}

// notify publishes a Secret Manager event notification, as Secret Manager
// does: attributes eventType, secretId, versionId, dataFormat, timestamp.
func (e *rotationPubSub) notify(typ, secret string, version int64) string {
	id := "projects/bio-prod/secrets/" + secret
	attrs := map[string]string{"eventType": typ, "secretId": id, "dataFormat": "JSON",
		"timestamp": time.Now().UTC().Format(time.RFC3339Nano)}
	if version > 0 {
		attrs["versionId"] = id + "/versions/" + strconv.FormatInt(version, 10)
	}
	return e.ps.Publish(e.topic, []byte(`{"name":"`+id+`"}`), attrs)
}

func (e *rotationPubSub) connection(name string, ttl, degradedTTL time.Duration) events.Connection {
	ev := &events.GCPEvents{Subscription: e.sub, Endpoint: "http://" + e.ps.Addr}
	if degradedTTL > 0 {
		ev.DegradedTTL = events.Duration(degradedTTL)
	}
	return events.Connection{Name: name, Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"biodb*"},
		Cache: &events.CachePolicy{TTL: events.Duration(ttl)},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey,
			ServiceAccountKey: e.reader.KeyJSON(), Endpoint: e.fake.Endpoint(), Events: ev}}
}

// reads is the AccessSecretVersion calls of secret after the first skip
// calls of the fake, and the distinct tokens (one per worker's provider)
// that made them.
func (e *rotationPubSub) reads(skip int, secret string) (n int, tokens map[string]bool) {
	tokens = map[string]bool{}
	for _, c := range e.fake.Calls()[skip:] {
		if c.Method == "AccessSecretVersion" && strings.HasPrefix(c.Resource, "projects/bio-prod/secrets/"+secret+"/") {
			n++
			tokens[c.Token] = true
		}
	}
	return n, tokens
}

// TestRotationGCPEndToEnd: pstest and the Secret Manager fake; a connection
// with TTL 1h read by two workers. Both resolve biodb01; a version is added
// and Secret Manager's SECRET_VERSION_ADD published: both workers serve the
// new value within 2 s, with one AccessSecretVersion each and none of
// biodb02; the message is acknowledged.
func TestRotationGCPEndToEnd(t *testing.T) {
	e := newRotationPubSub(t)
	e.fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"password":"pw-g-v1"}`))
	e.fake.MustAddVersion("bio-prod", "biodb02", []byte(`{"password":"pw-g-w1"}`))
	srv := natstest.Server(t)
	key := newMasterKey(t)
	w1 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	w2 := startWorker(t, joinedConfig(srv.ClientURL(), key))
	ws := []*worker{w1, w2}
	_, c := connect(t, srv.ClientURL())
	conn := e.connection("gcp-sm-bio", time.Hour, 0)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	for _, w := range ws {
		consuming(t, w, conn.Name)
	}
	warm(t, c, conn.Name, "biodb01", ws...)
	warm(t, c, conn.Name, "biodb02", ws...)
	// pstest hands a message to a pull already waiting; make sure each
	// consumer has pulled once (the subscription exists for both).
	if !waitUntil(10*time.Second, func() bool { return !w1.rotations.degraded(conn.Name) && !w2.rotations.degraded(conn.Name) }) {
		t.Fatal("a consumer is degraded")
	}
	skip := len(e.fake.Calls())

	v := e.fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"password":"pw-g-v2"}`))
	id := e.notify("SECRET_VERSION_ADD", "biodb01", v)
	t0 := time.Now()
	var delays []time.Duration
	for i, w := range ws {
		if !waitUntil(20*time.Second, func() bool { return serves(w, conn.Name, "biodb01", `{"password":"pw-g-v2"}`) }) {
			t.Fatalf("worker %d still serves the old value 20 s after the notification\n%s", i+1, w.logs.String())
		}
		delays = append(delays, time.Since(t0))
	}
	t.Logf("notification published to new value served: worker 1 %s, worker 2 %s", delays[0].Round(time.Millisecond), delays[1].Round(time.Millisecond))
	for i, d := range delays {
		if d > rotationDelayGoal {
			t.Errorf("worker %d served the new value %s after the notification, goal %s", i+1, d.Round(time.Millisecond), rotationDelayGoal)
		}
	}
	if !waitUntil(10*time.Second, func() bool { m := e.ps.Message(id); return m != nil && m.Acks > 0 }) {
		t.Error("the notification was not acknowledged")
	}
	if n, tokens := e.reads(skip, "biodb01"); n != 2 || len(tokens) != 2 {
		t.Errorf("%d AccessSecretVersion of biodb01 by %d workers for one rotation, want 1 per worker", n, len(tokens))
	}
	if n, _ := e.reads(skip, "biodb02"); n != 0 {
		t.Errorf("%d AccessSecretVersion of biodb02", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.Resolve(ctx, "bio", conn.Name, events.ResolveRequest{Secret: "biodb01"})
	if p, _ := got.String("password"); err != nil || !got.Cached || p != "pw-g-v2" {
		t.Fatalf("resolve after the notification: cached %v %v", got != nil && got.Cached, err)
	}
	for _, w := range ws {
		if !serves(w, conn.Name, "biodb02", `{"password":"pw-g-w1"}`) {
			t.Error("biodb02 dropped by biodb01's notification")
		}
		if containsAny(w.logs.String(), "pw-g-", "PRIVATE KEY") {
			t.Error("a worker logged a secret value or a key")
		}
	}
}

// TestRotationGCPHostileAndSubscriptionGone: at worker level through
// pstest, a notification without eventType, one whose secretId is not a
// secret, SECRET_ROTATE (not a change) and a foreign secret re-read nothing
// and are all acknowledged, and a change after them is handled; then the subscription is deleted: degraded (conn test's
// events step fails not_found, /metrics 1, the short TTL), and recreated:
// recovered, notifications flow again.
func TestRotationGCPHostileAndSubscriptionGone(t *testing.T) {
	e := newRotationPubSub(t)
	e.fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"password":"pw-gh-v1"}`))
	e.fake.MustAddVersion("bio-prod", "chemdb01", []byte(`{"password":"pw-gh-c1"}`))
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider("gcp", gcpFactory))
	_, c := connect(t, srv.ClientURL())
	const name = "gcp-sm-hostile"
	conn := e.connection(name, time.Hour, time.Second)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	consuming(t, w, name)
	warm(t, c, name, "biodb01", w)
	// Counts since now (the registry is the process's: -count runs add up).
	results := []string{"invalidated", "duplicate", "ignored", "foreign", "malformed", "failed"}
	base := map[string]float64{}
	for _, r := range results {
		base[r] = rotationMetric(t, "cloudbridge_rotation_events_total", map[string]string{"conn": name, "result": r})
	}
	count := func(result string) float64 {
		return rotationMetric(t, "cloudbridge_rotation_events_total", map[string]string{"conn": name, "result": result}) - base[result]
	}
	skip := len(e.fake.Calls())
	ids := []string{
		e.ps.Publish(e.topic, []byte(`{}`), map[string]string{"secretId": "projects/bio-prod/secrets/biodb01"}),
		e.ps.Publish(e.topic, []byte(`{}`), map[string]string{"eventType": "SECRET_UPDATE", "secretId": "projects/bio-prod/topics/biodb01"}),
		e.notify("SECRET_ROTATE", "biodb01", 0),
		e.notify("SECRET_VERSION_ADD", "chemdb01", 2),
	}
	if !waitUntil(20*time.Second, func() bool {
		for _, id := range ids {
			if m := e.ps.Message(id); m == nil || m.Acks == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("not every notification was acknowledged")
	}
	// A real change after them is still handled: no stall.
	v := e.fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"password":"pw-gh-v2"}`))
	e.notify("SECRET_VERSION_ADD", "biodb01", v)
	if !waitUntil(20*time.Second, func() bool { return serves(w, name, "biodb01", `{"password":"pw-gh-v2"}`) }) {
		t.Fatalf("the change after the bad notifications was not handled\n%s", w.logs.String())
	}
	for result, want := range map[string]float64{"malformed": 2, "ignored": 1, "foreign": 1, "invalidated": 1} {
		if !waitUntil(5*time.Second, func() bool { return count(result) == want }) {
			t.Errorf("events with result %s: %v, want %v", result, count(result), want)
		}
	}
	if n, _ := e.reads(skip, "biodb01"); n != 1 {
		t.Errorf("%d AccessSecretVersion of biodb01, want 1 (the one change)", n)
	}
	if n, _ := e.reads(skip, "chemdb01"); n != 0 {
		t.Errorf("%d AccessSecretVersion of the foreign chemdb01", n)
	}

	// The subscription disappears.
	gauge := `cloudbridge_rotation_degraded{conn="` + name + `"} `
	if _, err := e.ps.GServer.DeleteSubscription(tctx(t), &pubsubpb.DeleteSubscriptionRequest{Subscription: e.sub}); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(15*time.Second, func() bool { return w.rotations.degraded(name) }) {
		t.Fatal("not degraded 15 s after the subscription was deleted")
	}
	if !containsAny(scrape(t, w), gauge+"1") {
		t.Errorf("/metrics while degraded lacks %s1", gauge)
	}
	st, rep := eventsStep(t, c, name)
	if st.OK || rep.OK || st.Error == nil || st.Error.Code != events.CodeNotFound {
		t.Errorf("events step with the subscription deleted: %+v", st)
	}
	// The short TTL: served, biodb01 is re-read again and again (with the
	// 1h TTL it would not be).
	db01 := func() int { n, _ := e.reads(0, "biodb01"); return n }
	// Requests keep coming (a Peek alone never re-validates an expired value).
	peek := func() { _, _ = resolveReq(c, "bio", name, events.ResolveRequest{Secret: "biodb01"}) }
	if !churns(peek, db01, 2, 10*time.Second) {
		t.Fatal("no re-read of biodb01 within 10 s: the 1s degraded TTL does not apply")
	}
	e.createSub(t)
	if !waitUntil(15*time.Second, func() bool { return !w.rotations.degraded(name) }) {
		t.Fatal("still degraded 15 s after the subscription was recreated")
	}
	if !containsAny(scrape(t, w), gauge+"0") {
		t.Errorf("/metrics after recovery lacks %s0", gauge)
	}
	if st, rep := eventsStep(t, c, name); !st.OK || !rep.OK {
		t.Errorf("events step after recovery: %+v", st)
	}
	if !settles(peek, db01, 1500*time.Millisecond, 10*time.Second) {
		t.Fatal("biodb01 still re-read every second after recovery: the degraded TTL still applies")
	}
	warm(t, c, name, "biodb01", w)
	v = e.fake.MustAddVersion("bio-prod", "biodb01", []byte(`{"password":"pw-gh-v3"}`))
	e.notify("SECRET_VERSION_ADD", "biodb01", v)
	if !waitUntil(15*time.Second, func() bool { return serves(w, name, "biodb01", `{"password":"pw-gh-v3"}`) }) {
		t.Fatal("no invalidation after recovery")
	}
	if containsAny(w.logs.String(), "pw-gh-", "PRIVATE KEY") {
		t.Error("a secret value or a key in the logs")
	}
}

// gcpFactory builds GCP providers whose event pulls end after 1 s, so that
// a deleted subscription is noticed quickly.
func gcpFactory(ctx context.Context, c events.Connection) (provider.Resolver, error) {
	p, err := gcpprov.New(ctx, c, gcpprov.WithEventsPullTimeout(time.Second))
	if err != nil {
		return nil, err
	}
	return p, nil
}
