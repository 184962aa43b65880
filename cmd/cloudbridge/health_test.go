package main

import (
	"strings"
	"testing"
)

// TestHealthNoWorker: a probe of an address nothing listens on says the URL
// once, the cause, and the flag to check (exit 1: not ready).
func TestHealthNoWorker(t *testing.T) {
	addr := freeAddr(t)
	_, errOut, code := cb(t, "", "health", "--http-addr", addr)
	if code != 1 || strings.Count(errOut, "http://"+addr+"/readyz") != 1 || strings.Contains(errOut, "Get \"") ||
		!strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, "--http-addr "+addr) {
		t.Fatalf("health of a closed port: exit %d, stderr %q", code, errOut)
	}
}
