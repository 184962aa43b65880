package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/deploy"
	"github.com/cloudbridge/cloudbridge/events"
)

const wait = 5 * time.Second

// echoWorker answers every cloudbridge request as the worker user would, in
// the queue group, with the subject it saw and the group it parsed.
func echoWorker(t *testing.T, worker *deploy.Client) {
	t.Helper()
	subj := events.Subjects{}
	for _, op := range []string{events.OpResolve, events.OpTest, events.OpToken} {
		_, err := worker.QueueSubscribe(subj.OpWildcard(op), "cloudbridge", func(m *nats.Msg) {
			group, conn, err := subj.ParseOp(op, m.Subject)
			if err != nil {
				_ = m.Respond([]byte(`{"error":{"code":"bad_request","message":"bad subject"}}`))
				return
			}
			b, _ := json.Marshal(map[string]string{"op": op, "group": group, "connection": conn})
			_ = m.Respond(b)
		})
		if err != nil {
			t.Fatalf("worker subscribing to %s: %v", op, err)
		}
	}
	if _, err := worker.QueueSubscribe(subj.Admin("*", "*"), "cloudbridge", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"connections":[]}`))
	}); err != nil {
		t.Fatalf("worker subscribing to admin: %v", err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	if errs := worker.Errors(); len(errs) > 0 {
		t.Fatalf("worker got errors subscribing: %v", errs)
	}
}

type echoReply struct {
	Op, Group, Connection string
}

func TestSampleConfigAllowsEachUserItsSubjects(t *testing.T) {
	s := deploy.StartSampleServer(t)
	worker := deploy.ConnectAs(t, s, "worker")
	echoWorker(t, worker)
	subj := events.Subjects{}

	tests := []struct {
		user, subject string
		want          echoReply
	}{
		{"bio", subj.Resolve("bio", "local-bio"), echoReply{"resolve", "bio", "local-bio"}},
		{"bio", subj.Test("bio", "aws-sm-bio"), echoReply{"test", "bio", "aws-sm-bio"}},
		{"bio", subj.Token("bio", "aws-sm-bio"), echoReply{"token", "bio", "aws-sm-bio"}},
		// A connection that does not list bio is still reachable at the NATS
		// layer: the worker answers forbidden (the second layer).
		{"bio", subj.Resolve("bio", "gcp-sm-chem"), echoReply{"resolve", "bio", "gcp-sm-chem"}},
		{"chem", subj.Resolve("chem", "gcp-sm-chem"), echoReply{"resolve", "chem", "gcp-sm-chem"}},
	}
	for _, tc := range tests {
		t.Run(tc.user+"/"+tc.subject, func(t *testing.T) {
			c := deploy.ConnectAs(t, s, tc.user)
			msg, err := c.Request(tc.subject, []byte(`{"secret":"biodb01"}`), wait)
			if err != nil {
				t.Fatalf("request: %v (async errors %v)", err, c.Errors())
			}
			var got echoReply
			if err := json.Unmarshal(msg.Data, &got); err != nil {
				t.Fatalf("reply %q: %v", msg.Data, err)
			}
			if got != tc.want {
				t.Errorf("worker saw %+v, want %+v", got, tc.want)
			}
		})
	}

	t.Run("typed client as bio", func(t *testing.T) {
		c := deploy.ConnectAs(t, s, "bio")
		var got echoReply
		// The responder here is an echo, not a worker: it does not seal replies.
		err := events.NewClient(c.Conn, "").Unsealed().Request(context.Background(), subj.Resolve("bio", "local-bio"), events.ResolveRequest{Secret: "biodb01"}, &got)
		if err != nil || got.Group != "bio" {
			t.Fatalf("got %+v, %v", got, err)
		}
	})

	t.Run("admin reaches the registry", func(t *testing.T) {
		c := deploy.ConnectAs(t, s, "admin")
		msg, err := c.Request(subj.Admin(events.ResourceConnections, events.VerbList), []byte(`{}`), wait)
		if err != nil || string(msg.Data) != `{"connections":[]}` {
			t.Fatalf("admin list: %v %v", msg, err)
		}
	})

	t.Run("a worker's accepted broadcast reaches the other workers", func(t *testing.T) {
		got := make(chan string, 1)
		sub, err := worker.Subscribe(subj.Accepted("app"), func(m *nats.Msg) { got <- string(m.Data) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := worker.Flush(); err != nil {
			t.Fatal(err)
		}
		peer := deploy.ConnectAs(t, s, "worker")
		if err := peer.Publish(subj.Accepted("app"), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(wait):
			t.Fatalf("the worker never saw its peer's broadcast (async errors %v)", peer.Errors())
		}
	})

	t.Run("admin invalidate reaches every worker", func(t *testing.T) {
		got := make(chan string, 1)
		sub, err := worker.Subscribe(subj.Invalidate(), func(m *nats.Msg) { got <- string(m.Data) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := worker.Flush(); err != nil {
			t.Fatal(err)
		}
		c := deploy.ConnectAs(t, s, "admin")
		if err := c.Publish(subj.Invalidate(), []byte(`{"connection":"aws-sm-bio"}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case body := <-got:
			if body != `{"connection":"aws-sm-bio"}` {
				t.Errorf("worker got %q", body)
			}
		case <-time.After(wait):
			t.Fatal("the worker never saw the invalidate broadcast")
		}
	})
}

func TestSampleConfigRefusesOtherSubjects(t *testing.T) {
	s := deploy.StartSampleServer(t)
	echoWorker(t, deploy.ConnectAs(t, s, "worker"))
	subj := events.Subjects{}

	tests := []struct {
		user, subject string
	}{
		{"bio", subj.Resolve("chem", "gcp-sm-chem")},
		{"bio", subj.Test("chem", "gcp-sm-chem")},
		{"bio", subj.Token("chem", "gcp-sm-chem")},
		{"bio", subj.Admin(events.ResourceConnections, events.VerbPut)},
		{"bio", subj.Admin(events.ResourceSecrets, events.VerbList)},
		{"bio", subj.AdminRekey()},
		{"bio", subj.Invalidate()},
		{"bio", subj.Dead("bio")},
		{"bio", "cloudbridge.v1.dead.bio.x"},
		{"bio", "logs.app.web"},
		{"bio", "$JS.API.STREAM.LIST"},
		{"chem", subj.Resolve("bio", "local-bio")},
		{"admin", subj.Resolve("bio", "local-bio")},
		{"admin", "$KV." + subj.Bucket(events.BucketConnections) + ".aws-sm-bio"},
		{"logs", subj.Resolve("bio", "local-bio")},
		{"logs", subj.Admin(events.ResourceConnections, events.VerbGet)},
		{"worker", "other.app.web"}, // only logs.> (dead-letter replay republishes there)
		// Only the workers tell each other what a sink accepted.
		{"logs", subj.Accepted("app")},
		{"auditor", subj.Accepted("app")},
		{"bio", subj.Accepted("app")},
		{"admin", subj.Accepted("app")},
		{"worker", subj.Admin(events.ResourceConnections, events.VerbDelete)},
	}
	for _, tc := range tests {
		t.Run(tc.user+"/"+tc.subject, func(t *testing.T) {
			c := deploy.ConnectAs(t, s, tc.user)
			inbox := c.NewRespInbox()
			replies, err := c.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.PublishRequest(tc.subject, inbox, []byte(`{"name":"aws-sm-bio"}`)); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if perr := c.WaitPermissionViolation(tc.subject, wait); perr == nil {
				t.Fatalf("no permissions violation from the server for %s on %s (async errors %v)", tc.user, tc.subject, c.Errors())
			}
			if n, _, _ := replies.Pending(); n != 0 {
				t.Fatalf("%s got a reply on %s", tc.user, tc.subject)
			}
		})
	}

	t.Run("bio cannot subscribe to requests", func(t *testing.T) {
		c := deploy.ConnectAs(t, s, "bio")
		if _, err := c.SubscribeSync("cloudbridge.v1.>"); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if c.WaitPermissionViolation("cloudbridge.v1.>", wait) == nil {
			t.Fatal("no permissions violation for subscribing to cloudbridge.v1.>")
		}
	})
}

// TestSampleConfigRepliesStayInTheirAccount proves that a group cannot read
// another group's replies (which carry credentials) by subscribing to every
// inbox it may subscribe to.
func TestSampleConfigRepliesStayInTheirAccount(t *testing.T) {
	s := deploy.StartSampleServer(t)
	echoWorker(t, deploy.ConnectAs(t, s, "worker"))
	subj := events.Subjects{}

	snoop := deploy.ConnectAs(t, s, "bio")
	inboxes, err := snoop.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := snoop.Flush(); err != nil {
		t.Fatal(err)
	}
	chem := deploy.ConnectAs(t, s, "chem")
	if _, err := chem.Request(subj.Resolve("chem", "gcp-sm-chem"), []byte(`{"secret":"chemdb"}`), wait); err != nil {
		t.Fatalf("chem request: %v", err)
	}
	// The server routes a message to every matching subscription when it is
	// published, before chem got its reply; a flush of the snooping
	// connection therefore drains anything it would have received.
	if err := snoop.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := inboxes.Pending(); n != 0 {
		t.Fatalf("bio received %d of chem's replies", n)
	}
	// The subscription works: bio's own reply lands there.
	if _, err := snoop.Request(subj.Resolve("bio", "local-bio"), nil, wait); err != nil {
		t.Fatal(err)
	}
	if _, err := inboxes.NextMsg(wait); err != nil {
		t.Fatalf("bio's subscription never saw its own reply: %v", err)
	}
}

// TestSampleConfigWorkerJetStream proves the worker user may do what a worker
// does with JetStream: KV buckets with watches, and the logs stream that the
// logs user feeds and the worker consumes and acks.
func TestSampleConfigWorkerJetStream(t *testing.T) {
	s := deploy.StartSampleServer(t)
	worker := deploy.ConnectAs(t, s, "worker")
	js, err := jetstream.New(worker.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.Subjects{}.Bucket(events.BucketConnections)})
	if err != nil {
		t.Fatalf("worker creating a KV bucket: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("worker watching KV: %v", err)
	}
	defer w.Stop()
	if _, err := kv.Put(ctx, "aws-sm-bio", []byte("sealed")); err != nil {
		t.Fatalf("worker putting KV: %v", err)
	}
	seen := false
	for !seen {
		select {
		case e := <-w.Updates():
			seen = e != nil && e.Key() == "aws-sm-bio"
		case <-ctx.Done():
			t.Fatal("the KV watch never delivered the put")
		}
	}

	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: events.Subjects{}.LogsStream(), Subjects: []string{"logs.>"}})
	if err != nil {
		t.Fatalf("worker creating the logs stream: %v", err)
	}
	logs := deploy.ConnectAs(t, s, "logs", nats.CustomInboxPrefix("_INBOX_logs"))
	ljs, err := jetstream.New(logs.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ljs.Publish(ctx, "logs.app.web", []byte(`{"level":"info","msg":"user01 connected to biodb01"}`)); err != nil {
		t.Fatalf("logs user publishing with an ack: %v (async %v)", err, logs.Errors())
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: events.ExportConsumer("app-to-cloudwatch"), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("worker creating a consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("worker acking: %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("worker fetched %d log events, want 1 (fetch error %v)", n, batch.Error())
	}
	if errs := worker.Errors(); len(errs) > 0 {
		t.Fatalf("worker got async errors: %v", errs)
	}

	// The worker publishes dead letters and result events.
	for _, subject := range []string{events.Subjects{}.Dead("app-to-cloudwatch"), events.Subjects{}.Exported("app-to-cloudwatch")} {
		if err := worker.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, err := range worker.Errors() {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "cloudbridge.v1.") {
			t.Fatalf("worker may not publish its events: %v", err)
		}
	}
}
