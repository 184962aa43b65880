package main

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestTimeoutMustBePositive: a zero or negative --timeout (flag or env twin)
// is a usage error naming the flag, not a timeout blamed on the workers
// (exit 18) after nothing was sent. Nothing listens on the URL: the check
// comes before any connection.
func TestTimeoutMustBePositive(t *testing.T) {
	for _, args := range [][]string{
		{"--timeout", "0s", "conn", "ls"},
		{"conn", "ls", "--timeout=-1s"},
		{"resolve", "bio", "c", "s", "--timeout", "0"},
		{"health", "--timeout", "0s"},
	} {
		_, errOut, code := cb(t, "", append(args, "--nats-url", "nats://127.0.0.1:1")...)
		if strings.HasPrefix(args[0], "health") {
			_, errOut, code = cb(t, "", args...)
		}
		if code != events.ExitUsage || !strings.Contains(errOut, "--timeout") || !strings.Contains(errOut, "want a positive duration") {
			t.Errorf("cloudbridge %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
		}
	}
	t.Setenv("CLOUDBRIDGE_TIMEOUT", "0s")
	if _, errOut, code := cb(t, "", "conn", "ls", "--nats-url", "nats://127.0.0.1:1"); code != events.ExitUsage || !strings.Contains(errOut, "--timeout 0s") {
		t.Errorf("CLOUDBRIDGE_TIMEOUT=0s conn ls: exit %d, stderr %q", code, errOut)
	}
	// A verb that does not use --timeout ignores its env twin.
	if _, errOut, code := cb(t, "", "version"); code != 0 {
		t.Errorf("CLOUDBRIDGE_TIMEOUT=0s version: exit %d, stderr %q", code, errOut)
	}
}
