package service

import (
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/moto"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// rotationDelayGoal is the "every worker serves the new value within 2 s".
const rotationDelayGoal = 2 * time.Second

// TestRotationAWSEndToEnd: moto with the EventBridge rule of the docs
// targeting an SQS queue; a connection with TTL 1h read by two workers on
// one NATS server. Both resolve bio/db01 (and bio/db02); the secret is
// rotated with PutSecretValue and the CloudTrail-shaped event is put on
// EventBridge: both workers serve the new value within 2 s, each with one
// GetSecretValue of bio/db01 and none of any other secret.
func TestRotationAWSEndToEnd(t *testing.T) {
	e := newRotationMoto(t)
	e.create(t, "bio/db01", `{"password":"pw-rot-v1"}`)
	e.create(t, "bio/db02", `{"password":"pw-other-w1"}`)
	e.create(t, "chem/db01", `{"password":"pw-chem-c1"}`)
	srv := natstest.Server(t)
	key := newMasterKey(t)
	calls := []*awsCalls{newAWSCalls(e.name), newAWSCalls(e.name)}
	w1 := startWorker(t, joinedConfig(srv.ClientURL(), key), WithProvider("aws", awsFactory(calls[0], 20)))
	w2 := startWorker(t, joinedConfig(srv.ClientURL(), key), WithProvider("aws", awsFactory(calls[1], 20)))
	ws := []*worker{w1, w2}
	_, c := connect(t, srv.ClientURL())
	conn := e.connection("aws-sm-bio", time.Hour, 0)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	for _, w := range ws {
		consuming(t, w, conn.Name)
	}
	warm(t, c, conn.Name, "bio/db01", ws...)
	warm(t, c, conn.Name, "bio/db02", ws...)
	// Both consumers are polling the queue (at least one receive each).
	for i := range calls {
		if !waitUntil(20*time.Second, func() bool { return calls[i].n("ReceiveMessage") > 0 }) {
			t.Fatalf("worker %d never polled the queue", i+1)
		}
	}
	snaps := []map[string]int{calls[0].snapshot(), calls[1].snapshot()}
	delayed := func() float64 {
		return rotationMetric(t, "cloudbridge_rotation_delay_seconds", map[string]string{"conn": conn.Name})
	}
	invalidations := func() float64 {
		return rotationMetric(t, "cloudbridge_rotation_invalidations_total", map[string]string{"conn": conn.Name, "kind": "changed"})
	}
	delays0, inv0 := delayed(), invalidations()

	e.rotate(t, "bio/db01", `{"password":"pw-rot-v2"}`)
	e.emit(t, "PutSecretValue", "ct-e2e-1", "bio/db01", time.Now())
	t0 := time.Now()
	var delays []time.Duration
	for i, w := range ws {
		if !waitUntil(20*time.Second, func() bool { return serves(w, conn.Name, "bio/db01", `{"password":"pw-rot-v2"}`) }) {
			t.Fatalf("worker %d still serves the old value 20 s after the event\n%s", i+1, w.logs.String())
		}
		delays = append(delays, time.Since(t0))
	}
	t.Logf("event put to new value served: worker 1 %s, worker 2 %s", delays[0].Round(time.Millisecond), delays[1].Round(time.Millisecond))
	for i, d := range delays {
		if d > rotationDelayGoal {
			t.Errorf("worker %d served the new value %s after the event, goal %s", i+1, d.Round(time.Millisecond), rotationDelayGoal)
		}
	}
	// Through NATS too, from the cache.
	got, err := resolveReq(c, "bio", conn.Name, events.ResolveRequest{Secret: "bio/db01"})
	if err != nil || !got.Cached {
		t.Fatalf("resolve after the event: %+v %v", got, err)
	}
	if p, _ := got.String("password"); p != "pw-rot-v2" {
		t.Fatalf("resolve after the event: password %q", p)
	}
	// Observed: one invalidation (by whichever consumer got the message) and its delay.
	// (counted once the broadcast is flushed, so possibly just after the workers serve it).
	waitUntil(5*time.Second, func() bool { return invalidations()-inv0 >= 1 && delayed()-delays0 >= 1 })
	if n := invalidations() - inv0; n != 1 {
		t.Errorf("%v invalidations counted for one event", n)
	}
	if n := delayed() - delays0; n != 1 {
		t.Errorf("%v delay samples for one event", n)
	}
	// The queue is drained: the message was deleted after handling.
	if !waitUntil(10*time.Second, func() bool { return e.inQueue(t) == 0 }) {
		t.Errorf("%d messages left in the queue", e.inQueue(t))
	}
	for i := range calls {
		d := calls[i].since(snaps[i])
		if d["GetSecretValue bio/db01"] != 1 {
			t.Errorf("worker %d: %d GetSecretValue of bio/db01 for one rotation, want 1 (calls %v)", i+1, d["GetSecretValue bio/db01"], d)
		}
		if n := d["GetSecretValue"] - d["GetSecretValue bio/db01"]; n != 0 {
			t.Errorf("worker %d: %d GetSecretValue of other secrets (calls %v)", i+1, n, d)
		}
		if d["DescribeSecret"] != 0 {
			t.Errorf("worker %d: DescribeSecret during a rotation with a 1h TTL (calls %v)", i+1, d)
		}
	}
	for _, w := range ws {
		if !serves(w, conn.Name, "bio/db02", `{"password":"pw-other-w1"}`) {
			t.Error("bio/db02 dropped from a cache by bio/db01's event")
		}
		if containsAny(w.logs.String(), "pw-rot-v1", "pw-rot-v2", "pw-other-w1", moto.SecretAccessKey) {
			t.Error("a worker logged a secret value or the connection's key")
		}
	}
}

// TestRotationAWSHostileEvents: at worker level, through the queue, a
// malformed body, an event naming no secret, a foreign secret's event
// (outside bio/*), two events of one secret in reverse order and a
// duplicate: no crash, no stall (a later event is still handled), every
// message deleted, the right secrets re-read only, the value the latest.
func TestRotationAWSHostileEvents(t *testing.T) {
	e := newRotationMoto(t)
	e.create(t, "bio/db01", `{"password":"pw-h-v1"}`)
	e.create(t, "bio/db02", `{"password":"pw-h-w1"}`)
	e.create(t, "bio/db03", `{"password":"pw-h-x1"}`)
	e.create(t, "chem/db01", `{"password":"pw-h-c1"}`)
	srv := natstest.Server(t)
	calls := newAWSCalls(e.name)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider("aws", awsFactory(calls, 20)))
	_, c := connect(t, srv.ClientURL())
	const name = "aws-sm-hostile"
	conn := e.connection(name, time.Hour, 0)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	consuming(t, w, name)
	for _, s := range []string{"bio/db01", "bio/db02", "bio/db03"} {
		warm(t, c, name, s, w)
	}
	// chem/db01 is outside the allowlist: a requester cannot cache it.
	if _, err := resolveReq(c, "bio", name, events.ResolveRequest{Secret: "chem/db01"}); err == nil {
		t.Fatal("chem/db01 resolved through a bio/* connection")
	}
	snap := calls.snapshot()
	// Counts since now (the registry is the process's: -count runs add up).
	results := []string{"invalidated", "duplicate", "ignored", "foreign", "malformed", "failed"}
	base := map[string]float64{}
	for _, r := range results {
		base[r] = rotationMetric(t, "cloudbridge_rotation_events_total", map[string]string{"conn": name, "result": r})
	}
	count := func(result string) float64 {
		return rotationMetric(t, "cloudbridge_rotation_events_total", map[string]string{"conn": name, "result": result}) - base[result]
	}

	e.rotate(t, "bio/db01", `{"password":"pw-h-v2"}`)
	e.rotate(t, "bio/db01", `{"password":"pw-h-v3"}`)
	e.rotate(t, "chem/db01", `{"password":"pw-h-c2"}`)
	now := time.Now()
	typ, later := e.ctEvent("PutSecretValue", "ct-r2", "bio/db01", now)
	_, earlier := e.ctEvent("PutSecretValue", "ct-r1", "bio/db01", now.Add(-time.Second))
	_, foreign := e.ctEvent("PutSecretValue", "ct-f1", "chem/db01", now)
	e.send(t, `{"detail-type": "AWS API Call via CloudTrail", "detail": {"eventName": `) // not JSON
	e.send(t, envelope("eb-m2", typ, `{"eventSource":"secretsmanager.amazonaws.com","eventName":"PutSecretValue","eventID":"ct-m2"}`))
	e.send(t, envelope("eb-m3", typ, `{"eventSource":"secretsmanager.amazonaws.com","eventName":"PutSecretValue","eventID":"ct-m3","requestParameters":{"secretId":"arn:aws:s3:::not-a-secret"}}`))
	e.send(t, envelope("eb-f1", typ, foreign))
	e.send(t, envelope("eb-r2", typ, later))   // the later change first,
	e.send(t, envelope("eb-r1", typ, earlier)) // then the earlier one,
	e.send(t, envelope("eb-r2", typ, later))   // then the later one again
	// A change after all that is still handled: the consumer did not stall.
	e.rotate(t, "bio/db03", `{"password":"pw-h-x2"}`)
	e.emit(t, "PutSecretValue", "ct-s1", "bio/db03", time.Now())

	if !waitUntil(20*time.Second, func() bool {
		return serves(w, name, "bio/db03", `{"password":"pw-h-x2"}`) && serves(w, name, "bio/db01", `{"password":"pw-h-v3"}`)
	}) {
		t.Fatalf("the worker did not get to the latest values\n%s", w.logs.String())
	}
	if !waitUntil(20*time.Second, func() bool { return e.inQueue(t) == 0 }) {
		t.Fatalf("%d messages left in the queue: not every message was deleted", e.inQueue(t))
	}
	if !waitUntil(10*time.Second, func() bool { return count("malformed")+count("foreign")+count("duplicate")+count("invalidated") >= 8 }) {
		t.Fatalf("events counted: malformed %v foreign %v duplicate %v invalidated %v", count("malformed"), count("foreign"), count("duplicate"), count("invalidated"))
	}
	for result, want := range map[string]float64{"malformed": 3, "foreign": 1, "duplicate": 1, "invalidated": 3, "failed": 0} {
		if got := count(result); got != want {
			t.Errorf("events with result %s: %v, want %v", result, got, want)
		}
	}
	d := calls.since(snap)
	// Two distinct events of bio/db01 (the duplicate re-read nothing): one
	// re-read each, or one for both when the second came while the first
	// re-read was under way.
	if n := d["GetSecretValue bio/db01"]; n < 1 || n > 2 {
		t.Errorf("%d GetSecretValue of bio/db01 for two events, want 1 or 2 (calls %v)", n, d)
	}
	if d["GetSecretValue bio/db03"] != 1 || d["GetSecretValue bio/db02"] != 0 || d["GetSecretValue chem/db01"] != 0 {
		t.Errorf("re-reads of the wrong secrets: %v", d)
	}
	if !serves(w, name, "bio/db02", `{"password":"pw-h-w1"}`) {
		t.Error("bio/db02 dropped from the cache")
	}
	logs := w.logs.String()
	if !containsAny(logs, "malformed event dropped") {
		t.Error("malformed events not logged")
	}
	if containsAny(logs, "pw-h-", moto.SecretAccessKey) {
		t.Error("a secret value or the connection's key in the logs")
	}
	// Still consuming.
	if w.rotations.degraded(name) {
		t.Error("degraded after bad events")
	}
}

// TestRotationAWSQueueDisappears: the queue is deleted: the connection
// becomes degraded (conn test's events step fails with not_found, /metrics
// says 1), its values are cached for degraded_ttl (1s) instead of 1h; the
// queue is recreated: degraded clears everywhere and the long TTL is back.
func TestRotationAWSQueueDisappears(t *testing.T) {
	e := newRotationMoto(t)
	e.create(t, "bio/db01", `{"password":"pw-d-v1"}`)
	srv := natstest.Server(t)
	calls := newAWSCalls(e.name)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider("aws", awsFactory(calls, 1)))
	_, c := connect(t, srv.ClientURL())
	const name = "aws-sm-degraded"
	conn := e.connection(name, time.Hour, time.Second)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, conn, nil)
	consuming(t, w, name)
	gauge := `cloudbridge_rotation_degraded{conn="` + name + `"} `
	if !waitUntil(10*time.Second, func() bool { return calls.n("ReceiveMessage") > 0 && containsAny(scrape(t, w), gauge+"0") }) {
		t.Fatal("no receive, or /metrics does not say the connection is not degraded")
	}
	if st, rep := eventsStep(t, c, name); !st.OK || !rep.OK {
		t.Fatalf("events step with the queue there: %+v", st)
	}
	warm(t, c, name, "bio/db01", w)

	e.deleteQueue(t)
	if !waitUntil(15*time.Second, func() bool { return w.rotations.degraded(name) }) {
		t.Fatal("not degraded 15 s after the queue was deleted")
	}
	if m := scrape(t, w); !containsAny(m, gauge+"1") {
		t.Errorf("/metrics while degraded lacks %s1", gauge)
	}
	st, rep := eventsStep(t, c, name)
	if st.OK || rep.OK || st.Error == nil || st.Error.Code != events.CodeNotFound {
		t.Errorf("events step with the queue deleted: %+v (report ok %v)", st, rep.OK)
	}
	// And the running consumer's own step: it cannot receive, not_found.
	if steps, _ := eventsSteps(t, c, name); len(steps) != 2 || steps[1].OK || steps[1].Error == nil || steps[1].Error.Code != events.CodeNotFound {
		t.Errorf("events steps with the queue deleted: %+v, want the probe's and the consumer's (not_found)", steps)
	}
	// The short TTL: the value cached for 1h is trusted for 1s only, so a
	// worker serving it re-validates it (refresh ahead, DescribeSecret)
	// again and again; with the 1h TTL it would make no call.
	db01 := func() int { return calls.n("DescribeSecret bio/db01") + calls.n("GetSecretValue bio/db01") }
	// Requests keep coming (a Peek alone never re-validates an expired value).
	peek := func() { _, _ = resolveReq(c, "bio", name, events.ResolveRequest{Secret: "bio/db01"}) }
	if !churns(peek, db01, 2, 10*time.Second) {
		t.Fatal("no re-validation of bio/db01 within 10 s: the 1s degraded TTL does not apply")
	}
	if p, _ := resolveOne(t, c, name, "bio/db01").String("password"); p != "pw-d-v1" {
		t.Fatalf("resolve while degraded: password %q", p)
	}
	if !containsAny(w.logs.String(), "connection degraded") {
		t.Error("degraded not logged")
	}

	e.createQueue(t)
	if !waitUntil(15*time.Second, func() bool { return !w.rotations.degraded(name) }) {
		t.Fatal("still degraded 15 s after the queue was recreated")
	}
	if m := scrape(t, w); !containsAny(m, gauge+"0") {
		t.Errorf("/metrics after recovery lacks %s0", gauge)
	}
	if st, rep := eventsStep(t, c, name); !st.OK || !rep.OK {
		t.Errorf("events step after recovery: %+v", st)
	}
	// The long TTL is back: at most one more re-validation (of the value
	// stored under the cap), then none for 1.5 s while it is served.
	if !settles(peek, db01, 1500*time.Millisecond, 10*time.Second) {
		t.Fatal("bio/db01 still re-validated every second after recovery: the degraded TTL still applies")
	}
	if !serves(w, name, "bio/db01", `{"password":"pw-d-v1"}`) {
		t.Error("bio/db01 not served from the cache after recovery")
	}
	// Events flow again.
	e.rotate(t, "bio/db01", `{"password":"pw-d-v2"}`)
	e.emit(t, "PutSecretValue", "ct-d1", "bio/db01", time.Now())
	if !waitUntil(15*time.Second, func() bool { return serves(w, name, "bio/db01", `{"password":"pw-d-v2"}`) }) {
		t.Fatal("no invalidation after recovery")
	}
}
