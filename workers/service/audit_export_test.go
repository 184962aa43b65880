package service

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// An export block whose filters are audit subjects reads the audit stream:
// audit events reach (fake) CloudWatch Logs through the existing sink.
func TestAuditExportToCloudWatch(t *testing.T) {
	awsSrv := awsfake.New(t)
	awsSrv.AddCredentials(awsfake.Credentials{AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret"})
	cw := awsSrv.Logs()
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-logs", Provider: events.ProviderAWS,
		Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret", Endpoint: cw.URL()}}, nil)
	block := events.Export{Name: "audit-cw", Connection: "aws-logs", Subjects: []string{events.Subjects{}.Audit("resolve", "*", "*")},
		CloudWatch: &events.CloudWatchSink{LogGroup: "/security/audit", LogStream: "cloudbridge", Create: true},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(100 * time.Millisecond)}}
	adminReq(t, c, events.ResourceExports, events.VerbPut, block, nil)
	const n = 5
	for i := 0; i < n; i++ {
		if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := resolveReq(c, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err == nil {
		t.Fatal("chem resolved")
	}
	natstest.Eventually(t, 20*time.Second, "the resolves' audit events in CloudWatch", func() bool { return cw.Count() >= n+1 })
	got := cw.Events("/security/audit", "cloudbridge")
	outcomes := map[string]int{}
	for _, ev := range got {
		var a events.AuditEvent
		if err := json.Unmarshal([]byte(ev.Message), &a); err != nil || a.Op != "resolve" {
			t.Fatalf("not a resolve audit event: %q (%v)", ev.Message, err)
		}
		if strings.Contains(ev.Message, "password01") {
			t.Fatalf("audit event holds the value: %s", ev.Message)
		}
		outcomes[a.Outcome]++
	}
	if outcomes["ok"] != n || outcomes["forbidden"] != 1 {
		t.Fatalf("outcomes in CloudWatch: %v (want %d ok, 1 forbidden)", outcomes, n)
	}
}

// An export reads one stream: filters that mix audit subjects with log
// subjects are refused at put, naming both, and nothing is stored.
func TestExportMixingAuditAndLogsRefused(t *testing.T) {
	srv := natstest.Server(t)
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "aws-logs", Provider: events.ProviderAWS,
		Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret"}}, nil)
	audit := events.Subjects{}.Audit("resolve", "*", "*")
	block := events.Export{Name: "mixed", Connection: "aws-logs", Subjects: []string{"logs.app.>", audit},
		CloudWatch: &events.CloudWatchSink{LogGroup: "/x", LogStream: "y"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Request(ctx, c.Subjects().Admin(events.ResourceExports, events.VerbPut), block, nil)
	if !errors.Is(err, events.ErrBadRequest) || !strings.Contains(err.Error(), "logs.app.>") || !strings.Contains(err.Error(), audit) {
		t.Fatalf("mixed filters: %v, want bad_request naming both filters", err)
	}
	err = c.Request(ctx, c.Subjects().Admin(events.ResourceExports, events.VerbGet), events.NameRequest{Name: "mixed"}, nil)
	if !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("the refused export was stored: %v", err)
	}
	block.Subjects = []string{audit, events.Subjects{}.Audit("admin", "*", "*")}
	adminReq(t, c, events.ResourceExports, events.VerbPut, block, nil)
}
