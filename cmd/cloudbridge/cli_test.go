package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/workers/service"
)

// cb runs the CLI with args and returns stdout, stderr and the exit code.
func cb(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func startWorker(t *testing.T) string {
	t.Helper()
	cfg := config.Defaults()
	cfg.Listen, cfg.DataDir, cfg.HTTPAddr = "127.0.0.1:0", t.TempDir(), "off"
	// The fakes listen on loopback: allow it beside the clouds' domains.
	cfg.AllowEndpoints = append(append([]string(nil), provider.DefaultAllowEndpoints...), "127.0.0.1")
	w, err := service.Start(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w.ClientURL()
}

func TestWalkthroughWithCLI(t *testing.T) {
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	file := filepath.Join(t.TempDir(), "local-bio.json")
	if err := os.WriteFile(file, []byte(`{"name":"local-bio","provider":"builtin","groups":["bio"],"secrets":["biodb*"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args   []string
		stdin  string
		code   int
		stdout string
	}{
		{[]string{"conn", "put", "-f", file}, "", 0, "connection local-bio stored"},
		{[]string{"secret", "put", "local-bio", "biodb01", "login=user01", "password=password01"}, "", 0, "stored"},
		{[]string{"resolve", "bio", "local-bio", "biodb01"}, "", 0, "credentials.password  password01"},
		{[]string{"resolve", "bio", "local-bio", "biodb01", "--json"}, "", 0, `"password": "password01"`},
		{[]string{"--json", "resolve", "bio", "local-bio", "biodb01", "--keys", "login"}, "", 0, `"login": "user01"`},
		{[]string{"conn", "ls"}, "", 0, "local-bio  builtin"},
		{[]string{"conn", "get", "local-bio"}, "", 0, "provider  builtin"},
		{[]string{"conn", "get", "local-bio", "--json"}, "", 0, `"provider": "builtin"`},
		{[]string{"conn", "test", "bio", "local-bio", "--secret", "biodb01", "--keys", "login,password"}, "", 0, "keys present: login, password"},
		{[]string{"conn", "test", "bio", "local-bio", "--secret", "biodb01", "--keys", "host"}, "", 1, "FAIL"},
		{[]string{"secret", "ls", "local-bio", "--json"}, "", 0, `"biodb01"`},
		{[]string{"secret", "put", "local-bio", "biodb02"}, "s3cret-from-stdin\n", 0, "stored"},
		{[]string{"resolve", "bio", "local-bio", "biodb02"}, "", 0, "value       s3cret-from-stdin"},
		{[]string{"resolve", "bio", "local-bio", "biodb02", "--json"}, "", 0, `"version": "1"`},
		{[]string{"secret", "put", "local-bio", "biodb02", "v=2"}, "", 0, "stored"},
		{[]string{"resolve", "bio", "local-bio", "biodb02", "--json"}, "", 0, `"version": "2"`},
		{[]string{"resolve", "bio", "local-bio", "biodb01", "--json"}, "", 0, `"version": "1"`},
		{[]string{"invalidate", "nosuch"}, "", 13, ""},
		{[]string{"invalidate", "local-bio"}, "", 0, "dropped"},
		// An unknown connection is not_found, with or without a secret; a
		// secret of a known connection is dropped where cached, and one
		// cached nowhere (never put) is not an error: nothing to drop.
		{[]string{"invalidate", "nosuch", "biodb01"}, "", 13, ""},
		{[]string{"invalidate", "local-bio", "biodb01"}, "", 0, "secret biodb01 of local-bio dropped"},
		{[]string{"invalidate", "local-bio", "biodb99"}, "", 0, "nothing to drop where it was not cached"},
		{[]string{"invalidate", "local-bio", "bad name"}, "", 10, ""},
		{[]string{"resolve", "chem", "local-bio", "biodb01"}, "", 12, ""},
		{[]string{"resolve", "bio", "nope", "biodb01"}, "", 13, ""},
		{[]string{"resolve", "bio", "local-bio", "biodb01", "--keys", "host"}, "", 13, ""},
		{[]string{"secret", "rm", "local-bio", "biodb02"}, "", 0, "deleted"},
		{[]string{"admin", "rekey"}, "", 0, "re-sealed 0 records"},
		{[]string{"logs", "send", "logs.app.web", `{"level":"info","msg":"hello"}`}, "", 0, "1 event(s) stored on logs.app.web"},
		{[]string{"logs", "send", "logs.app.web", "-"}, "line one\nline two\n", 0, "2 event(s) stored"},
		{[]string{"logs", "send", "logs.*", "x"}, "", 2, ""},
		{[]string{"export", "ls"}, "", 0, "no exports"},
		{[]string{"export", "ls", "--json"}, "", 0, `"exports": []`},
		{[]string{"export", "get", "nope"}, "", 13, ""},
		{[]string{"export", "put", "-f", "-"}, `{"name":"e","connection":"local-bio","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`, 10, ""},
		{[]string{"conn", "rm", "local-bio"}, "", 0, "deleted"},
		{[]string{"conn", "get", "local-bio"}, "", 13, ""},
	}
	for _, s := range steps {
		out, errOut, code := cb(t, s.stdin, s.args...)
		if code != s.code || !strings.Contains(out, s.stdout) {
			t.Fatalf("cloudbridge %s: exit %d (want %d)\nstdout: %s\nstderr: %s", strings.Join(s.args, " "), code, s.code, out, errOut)
		}
		if s.code >= 10 && !strings.Contains(errOut, "cloudbridge: ") {
			t.Fatalf("no error message on stderr: %q", errOut)
		}
	}
}

func TestCLIUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage: cloudbridge <command>"},
		{[]string{"serve", "--help"}, 0, "--master-key-file"},
		{[]string{"bogus"}, 2, "unexpected argument"},
		{[]string{"serve", "--nats-url", "nats://127.0.0.1:1", "--http-addr", "off"}, 2, "master key is required"},
		{[]string{"resolve", "bio", "x", "y", "--nats-url", "nats://127.0.0.1:1"}, 17, ""},
		{[]string{"secret", "put", "c", "n", "novalue", "--nats-url", "nats://127.0.0.1:1"}, 2, ""},
	}
	for _, tc := range cases {
		out, errOut, code := cb(t, "", tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("cloudbridge %s: exit %d (want %d)\n%s%s", strings.Join(tc.args, " "), code, tc.code, out, errOut)
		}
	}
}

// The CLI's defaults (struct tags) and config.Defaults() must agree.
func TestServeDefaults(t *testing.T) {
	var c cli
	p, err := kong.New(&c, kong.Exit(func(int) {}), kong.Vars(config.Vars()))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range os.Environ() {
		if strings.HasPrefix(k, "CLOUDBRIDGE_") {
			t.Setenv(strings.SplitN(k, "=", 2)[0], "")
			os.Unsetenv(strings.SplitN(k, "=", 2)[0])
		}
	}
	if _, err := p.Parse([]string{"serve"}); err != nil {
		t.Fatal(err)
	}
	got := c.Serve.Serve
	got.NATS = c.clientFlags.NATS // serve takes the global NATS flags
	want := config.Defaults()
	got.DataDir = want.DataDir // kong resolves the path to an absolute one
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("kong defaults differ from config.Defaults():\n%s\nvs\n%s", g, w)
	}
	_ = events.DefaultPrefix
}

// lockedWriter makes a writer safe for the logger's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestRekeyWithUnreadableRecordFails: a record rekey cannot open is listed and
// the command exits 1, so a script running the rotation notices.
func TestRekeyWithUnreadableRecordFails(t *testing.T) {
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	file := filepath.Join(t.TempDir(), "c.json")
	for _, name := range []string{"good-conn", "torn-conn"} {
		if err := os.WriteFile(file, []byte(`{"name":"`+name+`","provider":"builtin","groups":["bio"],"secrets":["*"]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := cb(t, "", "conn", "put", "-f", file); code != 0 {
			t.Fatalf("conn put %s: %d %s", name, code, errOut)
		}
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.Subjects{}.Bucket(events.BucketConnections))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "torn-conn", []byte("not a sealed record")); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cb(t, "", "admin", "rekey")
	if code != 1 || !strings.Contains(out, "torn-conn") || !strings.Contains(errOut, "rekey incomplete: 1 records") {
		t.Fatalf("rekey over a torn record: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = cb(t, "", "--json", "admin", "rekey")
	var reply events.RekeyReply
	if code != 1 || json.Unmarshal([]byte(out), &reply) != nil || len(reply.Failed) != 1 || reply.Failed[0] != "torn-conn" {
		t.Fatalf("rekey --json over a torn record: code %d, stdout %q", code, out)
	}
}

// leafCommands are the verbs of the command line, as "conn ls", with their nodes.
func leafCommands(t *testing.T) map[string]*kong.Node {
	t.Helper()
	var c cli
	p := mustParser(t, &c)
	out := map[string]*kong.Node{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		if n.Type == kong.CommandNode && len(n.Children) == 0 {
			out[verbPath(n)] = n
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(p.Model.Node)
	if len(out) < 25 {
		t.Fatalf("only %d verbs", len(out))
	}
	return out
}

// Every verb's --help lists exactly the global flags it uses, each with a
// sentence; serve lists no CLI-only flag, and refuses them, naming what to
// use; the env twins of flags a verb does not use are ignored.
func TestHelpListsTheFlagsAVerbUses(t *testing.T) {
	clearNATSEnv(t)
	want := map[string][]string{
		"serve":     {"--nats-url", "--nats-creds", "--prefix", "--request-timeout", "--master-key-file"},
		"health":    {"--json", "--timeout", "--http-addr"},
		"version":   {"--json"},
		"logs send": {"--nats-url", "--json", "--timeout", "--inbox-prefix"},
		"conn ls":   {"--nats-url", "--nats-creds", "--prefix", "--json", "--timeout", "--inbox-prefix"},
	}
	globals := []string{"--nats-url", "--nats-user", "--nats-creds", "--prefix", "--json", "--timeout", "--inbox-prefix"}
	for verb, n := range leafCommands(t) {
		out, errOut, code := cb(t, "", append(strings.Fields(verb), "--help")...)
		if code != 0 || errOut != "" {
			t.Fatalf("%s --help: exit %d %s", verb, code, errOut)
		}
		used := usedBy(n)
		for _, g := range globals {
			listed := strings.Contains(out, "\n      "+g+"=") || strings.Contains(out, "\n      "+g+" ")
			if wantIt := used&groupOf(strings.TrimPrefix(g, "--")) != 0; listed != wantIt {
				t.Errorf("%s --help: %s listed %v, want %v\n%s", verb, g, listed, wantIt, out)
			}
		}
		for _, f := range want[verb] {
			if !strings.Contains(out, "      "+f) {
				t.Errorf("%s --help lacks %s:\n%s", verb, f, out)
			}
		}
		// Every flag has a sentence, and none is shown with an empty help.
		for _, fl := range n.Flags {
			if strings.TrimSpace(fl.Help) == "" {
				t.Errorf("%s: --%s has no help", verb, fl.Name)
			}
		}
	}
	if out, _, _ := cb(t, "", "serve", "--help"); strings.Contains(out, "CLI verbs") || !strings.Contains(out, "embedded NATS") {
		t.Errorf("serve's --nats-url help is the CLI's:\n%s", out)
	}
	if out, _, _ := cb(t, "", "conn", "ls", "--help"); strings.Contains(out, "embedded") || !strings.Contains(out, config.DefaultCLIURL) {
		t.Errorf("conn ls's --nats-url help is serve's:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--timeout", "1s"}, "serve does not take --timeout: it is how long a CLI verb waits for a reply; a worker's deadline of one request is --request-timeout"},
		{[]string{"--timeout=1s", "serve"}, "serve does not take --timeout"},
		{[]string{"serve", "--json"}, "serve does not take --json"},
		{[]string{"--inbox-prefix", "_INBOX_x", "serve"}, "serve does not take --inbox-prefix"},
		{[]string{"health", "--nats-url", "nats://127.0.0.1:1"}, "health does not take --nats-url"},
		{[]string{"version", "--prefix", "x"}, "version does not take --prefix"},
		{[]string{"logs", "send", "logs.a", "x", "--prefix", "x"}, "logs send does not take --prefix"},
	} {
		out, errOut, code := cb(t, "", tc.args...)
		if code != events.ExitUsage || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--help") {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, out, errOut)
		}
	}
	// The env twins are ignored by a verb that does not use them: one
	// environment can hold the CLI's and the worker's settings.
	t.Setenv("CLOUDBRIDGE_TIMEOUT", "3s")
	t.Setenv("CLOUDBRIDGE_JSON", "true")
	t.Setenv("CLOUDBRIDGE_INBOX_PREFIX", "_INBOX_x")
	var c cli
	p := mustParser(t, &c)
	kctx, err := p.Parse([]string{"serve", "--nats-url", "nats://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkGlobals(kctx); err != nil || c.Timeout != 3*time.Second {
		t.Fatalf("serve with CLOUDBRIDGE_TIMEOUT: %v (timeout %s)", err, c.Timeout)
	}
	// Every verb that talks to workers takes every global flag, before or after the verb.
	for verb, n := range leafCommands(t) {
		if usedBy(n) != gClient {
			continue
		}
		args := append([]string{"--json", "--timeout", "1s", "--prefix", "x"}, strings.Fields(verb)...)
		var c cli
		p := mustParser(t, &c)
		kctx, err := p.Parse(append(args, "--inbox-prefix", "_INBOX_x", "--nats-url", "nats://127.0.0.1:1"))
		if err != nil {
			continue // the verb's own arguments are missing: kong says so, not us
		}
		if err := checkGlobals(kctx); err != nil {
			t.Errorf("%s: %v", verb, err)
		}
	}
}

// Every verb's --help explains it beyond the one line, with an example that
// parses as written; every argument has a sentence. Unknown verbs and flags
// are usage errors with a hint.
func TestEveryVerbHelpHasAnExample(t *testing.T) {
	for verb, n := range leafCommands(t) {
		out, _, code := cb(t, "", append(strings.Fields(verb), "--help")...)
		if code != 0 || !strings.Contains(out, "Example") || n.Detail == "" {
			t.Errorf("%s --help: exit %d, no example:\n%s", verb, code, out)
			continue
		}
		for _, a := range n.Positional {
			if strings.TrimSpace(a.Help) == "" {
				t.Errorf("%s: argument <%s> has no help", verb, a.Name)
			}
		}
		examples := 0
		for _, line := range strings.Split(n.Detail, "\n") {
			i := strings.Index(line, "cloudbridge "+verb)
			if !strings.HasPrefix(line, "    ") || i < 0 {
				continue
			}
			examples++
			args := shellWords(line[i:])[1:]
			var c cli
			p := mustParser(t, &c)
			kctx, err := p.Parse(args)
			if err == nil {
				err = checkGlobals(kctx)
			}
			if err != nil || verbPath(selectedCommand(kctx)) != verb {
				t.Errorf("%s: example %q: %v", verb, line, err)
			}
		}
		if examples == 0 {
			t.Errorf("%s: no example line starts with 'cloudbridge %s':\n%s", verb, verb, n.Detail)
		}
	}
	for _, tc := range []struct {
		args       []string
		want, hint string
	}{
		{[]string{"bogus"}, "unexpected argument bogus", "Run 'cloudbridge --help'"},
		{[]string{"conn", "bogus"}, "unexpected argument bogus", "Run 'cloudbridge conn --help'"},
		{[]string{"conn"}, `expected one of "put"`, "Run 'cloudbridge conn --help'"},
		{[]string{"conn", "ls", "--bogus"}, "unknown flag --bogus", "Run 'cloudbridge conn ls --help'"},
		{[]string{"--bogus", "conn", "ls"}, "unknown flag --bogus", "Run 'cloudbridge --help'"},
		{[]string{"dead", "ls"}, `expected "<export>"`, "Run 'cloudbridge dead ls --help'"},
		{[]string{"help", "bogus"}, "unexpected argument bogus", "Run 'cloudbridge --help'"},
	} {
		out, errOut, code := cb(t, "", tc.args...)
		if code != events.ExitUsage || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, tc.hint) {
			t.Errorf("cloudbridge %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, out, errOut)
		}
	}
}
