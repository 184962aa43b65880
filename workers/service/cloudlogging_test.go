package service

import (
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/logging/apiv2/loggingpb"
	"google.golang.org/grpc"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/fake/loggingfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// Log export to Cloud Logging through the whole worker, with the
// connection's service-account key: the fake checks every call's token.
func TestCloudLoggingExportEndToEnd(t *testing.T) {
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	logs, err := loggingfake.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(logs.Close)
	fake := gcpfake.New(t, gcpfake.WithService(func(s *grpc.Server) { loggingpb.RegisterLoggingServiceV2Server(s, logs) }))
	writer := fake.AddServiceAccount("log-writer@bio-prod.iam.gserviceaccount.com")

	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "gcp-logs", Provider: events.ProviderGCP,
		Groups: []string{"ops"}, Secrets: []string{},
		GCP: &events.GCPConfig{Project: "bio-prod", Auth: events.GCPAuthServiceAccountKey, ServiceAccountKey: writer.KeyJSON(), Endpoint: fake.Endpoint()}}, nil)
	adminReq(t, c, events.ResourceExports, events.VerbPut, events.Export{Name: "gl-app", Connection: "gcp-logs", Subjects: []string{"logs.app.>"},
		CloudLogging: &events.CloudLoggingSink{Project: "bio-prod", LogID: "app", Resource: &events.MonitoredResource{Type: "global"}},
		Batch:        &events.BatchPolicy{MaxWait: events.Duration(100 * time.Millisecond)}}, nil)

	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		if _, err := js.Publish("logs.app.api", []byte(fmt.Sprintf(`{"severity":"WARNING","message":"m%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish("logs.app.api", []byte("a plain text line")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "every entry in Cloud Logging", func() bool { return logs.Count() >= n+1 })
	var text, warnings int
	for _, e := range logs.Entries() {
		if e.GetTextPayload() == "a plain text line" {
			text++
		}
		if e.GetJsonPayload() != nil && e.Severity.String() == "WARNING" {
			warnings++
		}
		if e.Labels["export"] != "gl-app" || e.Labels["subject"] != "logs.app.api" || e.InsertId == "" {
			t.Fatalf("entry labels/insertId: %v %q", e.Labels, e.InsertId)
		}
	}
	if text != 1 || warnings != n || logs.Duplicates() != 0 {
		t.Fatalf("text=%d warnings=%d duplicates=%d", text, warnings, logs.Duplicates())
	}
	if fake.CallsBy("WriteLogEntries", "log-writer@bio-prod.iam.gserviceaccount.com") == 0 {
		t.Fatalf("no WriteLogEntries call carried the connection's identity: %+v", fake.Calls())
	}
}
