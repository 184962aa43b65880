package main

import (
	"testing"

	"github.com/alecthomas/kong"
)

// TestEnvTwinsAsDocumented: the help and the README say which flags have an
// env twin CLOUDBRIDGE_<FLAG> (they said every flag, and CLOUDBRIDGE_KEYS or
// CLOUDBRIDGE_JSON did nothing): serve's flags, the global flags but --json
// and health --http-addr, each named after its flag; no other verb flag.
func TestEnvTwinsAsDocumented(t *testing.T) {
	var c cli
	p := mustParser(t, &c)
	check := func(where string, f *kong.Flag, want bool) {
		t.Helper()
		twin := "CLOUDBRIDGE_" + envName(f.Name)
		switch {
		case want && (len(f.Envs) == 0 || f.Envs[0] != twin):
			t.Errorf("%s --%s: env %v, want %s", where, f.Name, f.Envs, twin)
		case !want && len(f.Envs) > 0:
			t.Errorf("%s --%s: env %v, but the help says the verbs' own flags have none", where, f.Name, f.Envs)
		}
	}
	for _, f := range p.Model.Node.Flags {
		check("global", f, f.Name != "help" && f.Name != "json")
	}
	for verb, n := range leafCommands(t) {
		for _, f := range n.Flags {
			check(verb, f, verb == "serve" || (verb == "health" && f.Name == "http-addr"))
		}
	}
}

func envName(flag string) string {
	b := []byte(flag)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
