package main

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// A flag given last without its value is named, without kong's tokens.
func TestFlagMissingItsValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"conn", "put", "-f"}, "cloudbridge: --file: expected a value\n"},
		{[]string{"conn", "put", "--file"}, "cloudbridge: --file: expected a value\n"},
		{[]string{"resolve", "bio", "c", "db", "--version"}, "cloudbridge: --version: expected a value\n"},
		{[]string{"conn", "ls", "--nats-url"}, "cloudbridge: --nats-url: expected a value\n"},
	} {
		out, errOut, code := cb(t, "", tc.args...)
		if code != events.ExitUsage || out != "" || !strings.HasPrefix(errOut, tc.want) || strings.Contains(errOut, "EOL") {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, out, errOut)
		}
	}
}

// --version and version take no arguments; --version with a flag is the
// verb version with it.
func TestVersionRefusesArguments(t *testing.T) {
	for _, args := range [][]string{{"--version", "extra"}, {"version", "extra"}, {"--version", "--bogus"}} {
		out, errOut, code := cb(t, "", args...)
		if code != events.ExitUsage || out != "" || !strings.Contains(errOut, args[1]) {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, errOut, code := cb(t, "", args...)
		if code != 0 || !strings.HasPrefix(out, "cloudbridge ") || errOut != "" {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	for _, args := range [][]string{{"--version", "--json"}, {"--json", "--version"}, {"version", "--json"}} {
		out, errOut, code := cb(t, "", args...)
		if code != 0 || !strings.HasPrefix(out, "{") || errOut != "" {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
}
