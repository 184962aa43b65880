package main

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestAuditTailAllOrLast: --all and --last N are alternatives (the README's
// [--all|--last N]); both is a usage error, not --all silently winning.
func TestAuditTailAllOrLast(t *testing.T) {
	_, errOut, code := cb(t, "", "audit", "tail", "--all", "--last", "2", "--count", "1", "--nats-url", "nats://127.0.0.1:1")
	if code != events.ExitUsage || !strings.Contains(errOut, "--all and --last 2") {
		t.Fatalf("audit tail --all --last 2: exit %d, stderr %q", code, errOut)
	}
	// --all alone and --last alone get past the flags (to the missing NATS).
	for _, args := range [][]string{{"--all"}, {"--last", "2"}, {"--all", "--last", "0"}} {
		_, errOut, code := cb(t, "", append([]string{"audit", "tail", "--count", "1", "--nats-url", "nats://127.0.0.1:1"}, args...)...)
		if code != events.CodeUnavailable.ExitCode() {
			t.Errorf("audit tail %v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestOutcomeCellShowsSummaryCount(t *testing.T) {
	for _, c := range []struct {
		ev   events.AuditEvent
		want string
	}{
		{events.AuditEvent{Outcome: "ok"}, "ok"},
		{events.AuditEvent{Outcome: "throttled"}, "throttled"},
		{events.AuditEvent{Outcome: "throttled", Count: 1}, "throttled"},
		{events.AuditEvent{Outcome: "throttled", Count: 999}, "throttled(999)"},
	} {
		if got := outcomeCell(c.ev); got != c.want {
			t.Errorf("outcomeCell(%+v) = %q, want %q", c.ev, got, c.want)
		}
	}
}
