package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestExitCodesFromErrorTable: every wire code exits with the table's exit
// code, and --help lists them all.
func TestExitCodesFromErrorTable(t *testing.T) {
	for _, r := range events.ErrorTable() {
		var stderr bytes.Buffer
		err := fmt.Errorf("doing x: %w", events.Errorf(r.Code, "why"))
		if got := report(&stderr, err); got != r.Exit {
			t.Errorf("%s: exit %d, want %d", r.Code, got, r.Exit)
		}
		if !strings.Contains(stderr.String(), string(r.Code)+": doing x: why") {
			t.Errorf("%s: stderr %q", r.Code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if got := report(&stderr, errors.New("plain")); got != events.ExitFailure {
		t.Errorf("plain error: exit %d", got)
	}
	if got := report(&stderr, usageError{errors.New("bad flag")}); got != events.ExitUsage {
		t.Errorf("usage error: exit %d", got)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	help := strings.Join(strings.Fields(out.String()), " ")
	for _, r := range events.ErrorTable() {
		if want := fmt.Sprintf("%d %s", r.Exit, r.Code); !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}
