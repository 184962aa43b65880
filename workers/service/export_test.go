package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/schemas"
)

// Log export through the whole worker: an export block put over admin, events
// published to logs.app.web, delivered to (fake) CloudWatch Logs signed with
// the connection's key, result events published, bad events dead-lettered.
func TestLogExportEndToEnd(t *testing.T) {
	awsSrv := awsfake.New(t)
	awsSrv.AddCredentials(awsfake.Credentials{AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret"})
	cw := awsSrv.Logs()
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-logs", Provider: events.ProviderAWS,
		Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret", Endpoint: cw.URL()}}, nil)

	exported, err := nc.SubscribeSync(events.Subjects{}.Exported("cw-app"))
	if err != nil {
		t.Fatal(err)
	}
	block := events.Export{Name: "cw-app", Connection: "aws-logs", Subjects: []string{"logs.app.>"}, MinLevel: "info",
		CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/app", LogStream: "{subject}", Create: true, RetentionDays: 30},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(100 * time.Millisecond)}}
	var stored events.Export
	adminReq(t, c, events.ResourceExports, events.VerbPut, block, &stored)
	var list events.ExportList
	adminReq(t, c, events.ResourceExports, events.VerbList, events.Empty{}, &list)
	if len(list.Exports) != 1 || list.Exports[0].Name != "cw-app" {
		t.Fatalf("exports: %+v", list.Exports)
	}
	// A connection used by an export cannot be deleted.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Request(ctx, c.Subjects().Admin(events.ResourceConnections, events.VerbDelete), events.NameRequest{Name: "aws-logs"}, nil); !errors.Is(err, events.ErrBadRequest) {
		t.Fatalf("deleting a connection in use: %v", err)
	}

	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"level":"info","msg":"hello %d","time":%q}`, i, now.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano))
		if _, err := js.Publish("logs.app.web", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish("logs.app.web", []byte(`{"level":"debug","msg":"dropped by min_level"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("logs.app.web", []byte("")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "every event in CloudWatch", func() bool { return cw.Count() >= n })
	streams := cw.Streams("/platform/app")
	if len(streams) != 1 {
		t.Fatalf("streams: %v", streams)
	}
	got := cw.Events("/platform/app", streams[0])
	seen := map[string]bool{}
	for _, ev := range got {
		var m map[string]any
		if err := json.Unmarshal([]byte(ev.Message), &m); err != nil {
			t.Fatalf("event not forwarded whole: %q", ev.Message)
		}
		seen[m["msg"].(string)] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprintf("hello %d", i)] {
			t.Fatalf("event %d missing", i)
		}
	}
	if seen["dropped by min_level"] {
		t.Fatal("a debug event passed min_level info")
	}
	for _, call := range cw.Calls() {
		if call.Op == "PutLogEvents" && call.AccessKeyID != "AKIDLOGSEXAMPLE00001" {
			t.Fatalf("PutLogEvents signed by %q", call.AccessKeyID)
		}
	}
	if cw.Retention("/platform/app") != 30 {
		t.Fatalf("retention %d", cw.Retention("/platform/app"))
	}
	// Result events add up to what was delivered.
	total := 0
	for total < n {
		msg, err := exported.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("result events: %v after %d events", err, total)
		}
		if err := schemas.Validate("exported-event", msg.Data); err != nil {
			t.Fatalf("result event %s: %v", msg.Data, err)
		}
		var ev events.ExportedEvent
		if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Export != "cw-app" {
			t.Fatalf("result event %s: %v", msg.Data, err)
		}
		total += ev.Events
	}
	// The empty message is dead-lettered with its reason.
	dead, err := js.SubscribeSync(events.Subjects{}.Dead("cw-app"), nats.DeliverAll())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dead.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if err := schemas.Validate("dead-letter", msg.Data); err != nil {
		t.Fatalf("dead letter %s: %v", msg.Data, err)
	}
	var dl events.DeadLetter
	if err := json.Unmarshal(msg.Data, &dl); err != nil || dl.Reason == "" || dl.Subject != "logs.app.web" || dl.Seq == 0 {
		t.Fatalf("dead letter %s: %v", msg.Data, err)
	}

	// Removing the block stops the export.
	adminReq(t, c, events.ResourceExports, events.VerbDelete, events.NameRequest{Name: "cw-app"}, nil)
	adminReq(t, c, events.ResourceConnections, events.VerbDelete, events.NameRequest{Name: "aws-logs"}, nil)
}
