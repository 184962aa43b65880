package main

import (
	"strings"
	"testing"
)

// TestRedactURL: no password or token of a NATS URL reaches the CLI's
// messages, also in a URL given without its scheme (nats.go accepts
// user:pass@host:port); the cases of the redaction are in internal/bus.
func TestRedactURL(t *testing.T) {
	_, errOut, code := cb(t, "", "conn", "ls", "--nats-url", "user:sekret@127.0.0.1:1")
	if code == 0 || strings.Contains(errOut, "sekret") || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Fatalf("conn ls with a bare URL: exit %d, stderr %q", code, errOut)
	}
}
