package main

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestUnavailableHintOnlyWithoutWorkers: "no worker answers" tells where the
// CLI looked and how to start a worker; an unavailable reply of a worker (its
// cloud is down) is printed as the worker sent it, without that hint.
func TestUnavailableHintOnlyWithoutWorkers(t *testing.T) {
	clearNATSEnv(t)
	s := natstest.Server(t)
	url := s.ClientURL()

	_, errOut, code := cb(t, "", "resolve", "bio", "aws-bio", "db", "--nats-url", url)
	if code != events.CodeUnavailable.ExitCode() || !strings.Contains(errOut, "no cloudbridge worker answers") ||
		!strings.Contains(errOut, "start one with 'cloudbridge serve'") {
		t.Fatalf("no worker: exit %d, stderr %q", code, errOut)
	}

	nc := natstest.Connect(t, s)
	const msg = `aws: GetSecretValue db: AWS is unreachable`
	sub, err := nc.Subscribe(events.Subjects{}.Resolve("bio", "aws-bio"), func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(events.HeaderErrorCode, "503")
		r.Header.Set(events.HeaderError, msg)
		r.Data = []byte(`{"error":{"code":"unavailable","message":"` + msg + `"}}`)
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = cb(t, "", "resolve", "bio", "aws-bio", "db", "--nats-url", url)
	if code != events.CodeUnavailable.ExitCode() || strings.TrimSpace(errOut) != "cloudbridge: unavailable: "+msg {
		t.Fatalf("a worker's unavailable reply: exit %d, stderr %q", code, errOut)
	}
}
