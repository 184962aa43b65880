package logging

import (
	"bytes"
	"strings"
	"testing"
)

// TestConsoleWithoutColoursOffATerminal: --log-format console writing to a
// file or pipe has no ANSI escape codes (it had them in every line).
func TestConsoleWithoutColoursOffATerminal(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("info", "console", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("conn", "bio").Msg("hello")
	out := buf.String()
	if strings.Contains(out, "\x1b[") || !strings.Contains(out, "hello") || !strings.Contains(out, "conn=bio") {
		t.Fatalf("console line %q", out)
	}
}
