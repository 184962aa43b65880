package main

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestConnTestArgNames: conn test's arguments are GROUP CONN as the README
// writes them; a missing one is named so (it said "<name>").
func TestConnTestArgNames(t *testing.T) {
	_, errOut, code := cb(t, "", "conn", "test", "bio")
	if code != events.ExitUsage || !strings.Contains(errOut, `expected "<conn>"`) {
		t.Fatalf("conn test bio: exit %d, stderr %q", code, errOut)
	}
	out, _, code := cb(t, "", "conn", "test", "--help")
	if code != 0 || !strings.Contains(out, "conn test <group> <conn>") {
		t.Fatalf("conn test --help: exit %d\n%s", code, out)
	}
}
