package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// Export health through the CLI against a sink that fails with 503: export
// ls and export get show the lag (the events sit ack-pending), the last
// error with its cause and endpoint, and the retries.
func TestExportHealthOfFailingSink(t *testing.T) {
	clearNATSEnv(t)
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	srv := awsfake.New(t)
	srv.AddCredentials(awsfake.Credentials{AccessKeyID: "AKIDLOGSEXAMPLE00002", SecretAccessKey: "logs-secret"})
	cw := srv.Logs()
	cw.FailFor(time.Hour, http.StatusServiceUnavailable)
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := cb(t, "", args...)
		if code != 0 {
			t.Fatalf("cloudbridge %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	conn, _ := events.Marshal(events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDLOGSEXAMPLE00002", SecretAccessKey: "logs-secret", Endpoint: cw.URL()}})
	if out, errOut, code := cb(t, string(conn), "conn", "put", "-f", "-"); code != 0 {
		t.Fatalf("conn put: %s%s", out, errOut)
	}
	block, _ := events.Marshal(events.Export{Name: "cw-down", Connection: "aws-logs", Subjects: []string{"logs.down.>"},
		CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/down", LogStream: "{subject}", Create: true},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(50 * time.Millisecond)}})
	if out, errOut, code := cb(t, string(block), "export", "put", "-f", "-"); code != 0 {
		t.Fatalf("export put: %s%s", out, errOut)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the export runs", func() bool {
		_, err := js.ConsumerInfo(events.Subjects{}.LogsStream(), events.ExportConsumer("cw-down"))
		return err == nil
	})
	for range 7 {
		if _, err := js.Publish("logs.down.web", []byte(`{"level":"info","msg":"hi"}`)); err != nil {
			t.Fatal(err)
		}
	}
	var shown struct {
		Name   string               `json:"name"`
		Status *events.ExportStatus `json:"status"`
	}
	natstest.Eventually(t, 30*time.Second, "export get shows lag, retries and the last error", func() bool {
		out := must("export", "get", "cw-down", "--json")
		shown.Status = nil
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			t.Fatalf("export get --json: %v\n%s", err, out)
		}
		st := shown.Status
		return st != nil && st.Lag == 7 && st.AckPending == 7 && st.Retries > 0 && st.LastError != nil
	})
	le := shown.Status.LastError
	if shown.Name != "cw-down" || le.Code != events.CodeUnavailable || le.Endpoint != cw.URL() || le.Message == "" || shown.Status.LastDelivery != nil {
		t.Fatalf("status %+v, last error %+v", shown.Status, le)
	}
	out := must("export", "ls")
	for _, want := range []string{"LAG", "LAST ERROR", "cw-down", "never", le.Message} {
		if !strings.Contains(out, want) {
			t.Fatalf("export ls lacks %q:\n%s", want, out)
		}
	}
	out = must("export", "get", "cw-down")
	for _, want := range []string{"status.lag", "status.last_error.endpoint", "status.retries", "status.dead_letters"} {
		if !strings.Contains(out, want) {
			t.Fatalf("export get lacks %q:\n%s", want, out)
		}
	}
}
