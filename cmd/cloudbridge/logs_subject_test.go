package main

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestLogsSendSystemSubject: logs send refuses NATS's own $ subjects before
// connecting (a publish to $KV.<bucket>.<key> would write a KV record), and
// a subject a service answers (a request subject, not a stream) is reported
// as such, not as "unavailable: invalid jetstream publish response".
func TestLogsSendSystemSubject(t *testing.T) {
	clearNATSEnv(t)
	for _, subj := range []string{"$KV.cloudbridge_connections.x", "$JS.API.STREAM.DELETE.CLOUDBRIDGE_LOGS", "$SRV.PING"} {
		_, errOut, code := cb(t, "", "logs", "send", subj, "x", "--nats-url", "nats://127.0.0.1:1")
		if code != events.ExitUsage || !strings.Contains(errOut, "NATS system subject") {
			t.Errorf("logs send %s: exit %d, stderr %q", subj, code, errOut)
		}
	}
	// The service's own subjects and reply inboxes: an admin verb, a forged
	// audit event, a forged reply.
	for _, subj := range []string{"cloudbridge.v1.admin.connections.delete", "cloudbridge.v1.audit.resolve.bio.x", "_INBOX.abc.def"} {
		_, errOut, code := cb(t, "", "logs", "send", subj, `{"name":"x"}`, "--nats-url", "nats://127.0.0.1:1")
		if code != events.ExitUsage || !strings.Contains(errOut, "not a log subject") {
			t.Errorf("logs send %s: exit %d, stderr %q", subj, code, errOut)
		}
	}
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	sub, err := nc.Subscribe("svc.echo", func(m *nats.Msg) { _ = m.Respond([]byte(`{"connections":[]}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cb(t, "", "logs", "send", "svc.echo", "x", "--nats-url", s.ClientURL())
	if code != events.CodeBadRequest.ExitCode() || !strings.Contains(errOut, "answered by a service") || strings.Contains(errOut, "invalid jetstream") {
		t.Fatalf("logs send to a service: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
