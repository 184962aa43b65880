package main

import (
	"strings"
	"testing"
)

// TestMaxInFlightHelp: serve --help says what --max-in-flight does, as the
// README does: a bound per admin endpoint past which requests fail at once
// with throttled (it said "more wait").
func TestMaxInFlightHelp(t *testing.T) {
	out, _, code := cb(t, "", "serve", "--help")
	i := strings.Index(out, "--max-in-flight")
	if code != 0 || i < 0 {
		t.Fatalf("serve --help: exit %d\n%s", code, out)
	}
	help := strings.Join(strings.Fields(out[i:min(len(out), i+400)]), " ")
	if !strings.Contains(help, "per admin endpoint") || !strings.Contains(help, "fail at once with throttled") || strings.Contains(help, "more wait") {
		t.Fatalf("--max-in-flight help: %s", help)
	}
}
