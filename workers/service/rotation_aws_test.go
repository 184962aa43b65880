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
	conn := e.connection(time.Hour, 0)
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
