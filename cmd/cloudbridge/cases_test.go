package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/deploy"
	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/workers/service"
)

func clearNATSEnv(t *testing.T) {
	t.Helper()
	for _, k := range os.Environ() {
		if strings.HasPrefix(k, "CLOUDBRIDGE_") || strings.HasPrefix(k, "NATS_") {
			name := strings.SplitN(k, "=", 2)[0]
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

// startSample starts the sample nats-server config with a worker joined as
// its worker user.
func startSample(t *testing.T) *server.Server {
	t.Helper()
	s := deploy.StartSampleServer(t)
	cfg := config.Defaults()
	cfg.URL, cfg.User, cfg.Password = s.ClientURL(), "worker", deploy.SampleUsers["worker"]
	cfg.MasterKey = base64.StdEncoding.EncodeToString(make([]byte, 32))
	cfg.HTTPAddr = "off"
	w, err := service.Start(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return s
}

func as(s *server.Server, user string) []string {
	return []string{"--nats-url", s.ClientURL(), "--nats-user", user, "--nats-password", deploy.SampleUsers[user]}
}

func TestCLIAgainstTheSampleNATSConfig(t *testing.T) {
	clearNATSEnv(t)
	s := startSample(t)
	admin := as(s, "admin")

	// A wrong password: the credentials were refused, exit 11, no "start a worker".
	_, errOut, code := cb(t, "", "conn", "ls", "--nats-url", s.ClientURL(), "--nats-user", "admin", "--nats-password", "wrong")
	if code != 11 || !strings.Contains(errOut, "refused the credentials") || strings.Contains(errOut, "serve") {
		t.Fatalf("wrong password: exit %d %s", code, errOut)
	}

	// A publish-permission violation is reported at once as forbidden,
	// not after the 60 s timeout.
	start := time.Now()
	_, errOut, code = cb(t, "", append([]string{"conn", "ls", "--timeout", "60s"}, as(s, "bio")...)...)
	if code != 12 || !strings.Contains(errOut, "forbidden") || !strings.Contains(strings.ToLower(errOut), "publish") {
		t.Fatalf("permission violation: exit %d %s", code, errOut)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the violation took %s to report", d)
	}

	// Global flags before the verb.
	if out, errOut, code := cb(t, "", append(append([]string{"--json"}, admin...), "conn", "ls")...); code != 0 || !strings.Contains(out, `"connections"`) {
		t.Fatalf("flags before the verb: exit %d %s %s", code, out, errOut)
	}

	// A bad duration names its field.
	conn := `{"name":"c1","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"5 minutes"}}`
	if _, errOut, code := cb(t, conn, append([]string{"conn", "put", "-f", "-"}, admin...)...); code != 10 || !strings.Contains(errOut, `cache.ttl: invalid duration "5 minutes"`) {
		t.Fatalf("bad duration: exit %d %s", code, errOut)
	}

	// The logs user may only subscribe to _INBOX_logs.>: without
	// --inbox-prefix, logs send says so and stores nothing; with it, it works.
	logs := as(s, "logs")
	if _, errOut, code := cb(t, "", append([]string{"logs", "send", "logs.app.cases", "first"}, logs...)...); code != 12 || !strings.Contains(errOut, "--inbox-prefix") {
		t.Fatalf("logs send without --inbox-prefix: exit %d %s", code, errOut)
	}
	if out, errOut, code := cb(t, "", append([]string{"logs", "send", "logs.app.cases", "second", "--inbox-prefix", "_INBOX_logs"}, logs...)...); code != 0 || !strings.Contains(out, "1 event(s) stored") {
		t.Fatalf("logs send with --inbox-prefix: exit %d %s %s", code, out, errOut)
	}
	// Publishing where the user may not: forbidden at once, nothing stored.
	if _, errOut, code := cb(t, "", append([]string{"--inbox-prefix", "_INBOX_logs", "logs", "send", "other.subject", "x"}, logs...)...); code != 12 {
		t.Fatalf("logs send to a forbidden subject: exit %d %s", code, errOut)
	}
	wc := deploy.ConnectAs(t, s, "worker")
	js, err := wc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := js.SubscribeSync("logs.app.cases", nats.DeliverAll(), nats.AckNone())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "second" {
		t.Fatalf("first stored event: %v %v", msg, err)
	}
	if info, err := js.StreamInfo("CLOUDBRIDGE_LOGS", &nats.StreamInfoRequest{SubjectsFilter: "logs.app.cases"}); err != nil || info.State.Msgs != 1 {
		t.Fatalf("stored on logs.app.cases: %+v %v (want only the event reported as stored)", info, err)
	}
}

func TestCLICases(t *testing.T) {
	clearNATSEnv(t)
	url := startWorker(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 1<<20+1) + "\n"
	cases := []struct {
		args   []string
		stdin  string
		code   int
		stdout string // in stdout
		stderr string // in stderr
	}{
		{[]string{}, "", 2, "", "cloudbridge --help"},
		{[]string{"help"}, "", 0, "Usage: cloudbridge <command>", ""},
		{[]string{"help", "conn"}, "", 0, "Usage: cloudbridge conn <command>", ""},
		{[]string{"--version"}, "", 0, "cloudbridge ", ""},
		{[]string{"version"}, "", 0, "cloudbridge ", ""},
		{[]string{"conn", "put", "local-bio.json"}, "", 2, "", "-f local-bio.json"},
		{[]string{"conn", "put", "-f", filepath.Join(dir, "missing.json")}, "", 10, "", "bad_request"},
		{[]string{"conn", "put", "-f", bad}, "", 10, "", "not JSON"},
		{[]string{"conn", "put", "-f", dir}, "", 10, "", "directory"},
		{[]string{"export", "put", "-f", dir}, "", 10, "", "directory"},
		{[]string{"conn", "ls", "--nats-url", url, "--prefix", "nobody"}, "", 17, "", url},
		{[]string{"logs", "send", "logs.app.long", "-", "--nats-url", url}, "ok\n" + long, 14, "1 event(s) stored", "1 MiB"},
		{[]string{"--nats-url", url, "export", "ls"}, "", 0, "no exports", ""},
		{[]string{"logs", "send", "other.subject", "x", "--nats-url", url}, "", 13, "", "not stored"},
		{[]string{"invalidate", "nosuch", "--nats-url", url}, "", 13, "", "not_found"},
		{[]string{"token", "ops", "nosuch", "--duration", "30m", "--nats-url", url}, "", 13, "", "not_found"}, // --duration parses (it did not)
		{[]string{"token", "ops", "nosuch", "--duration=-1h", "--nats-url", url}, "", 2, "", "not negative"},
		{[]string{"secret", "ls", "nosuch", "--nats-url", url}, "", 13, "", ""},
		{[]string{"conn", "ls", "--nats-url", url}, "", 0, "no connections", ""},
		{[]string{"export", "put", "-f", "-", "--nats-url", url}, `{"name":"e1","connection":"nosuch","subjects":["logs.app.>"],"cloudwatch":{"log_group":"g"}}`, 13, "", ""},
	}
	for _, tc := range cases {
		out, errOut, code := cb(t, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
			args := strings.Join(tc.args, " ")
			if len(args) > 200 {
				args = args[:200]
			}
			t.Errorf("cloudbridge %s: exit %d (want %d)\nstdout: %.500s\nstderr: %.500s", args, code, tc.code, out, errOut)
		}
		if strings.Contains(errOut, "bufio") {
			t.Errorf("raw bufio error: %s", errOut)
		}
	}
}

// health probes /readyz: 0 for a ready worker, 1 when nothing answers.
func TestHealthVerb(t *testing.T) {
	clearNATSEnv(t)
	cfg := config.Defaults()
	httpAddr := freeAddr(t)
	cfg.Listen, cfg.DataDir, cfg.HTTPAddr = "127.0.0.1:0", t.TempDir(), httpAddr
	w, err := service.Start(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	_, port, _ := strings.Cut(httpAddr, ":")
	if out, errOut, code := cb(t, "", "health", "--http-addr", "0.0.0.0:"+port); code != 0 {
		t.Fatalf("health of a ready worker: exit %d %s %s", code, out, errOut)
	}
	if out, errOut, code := cb(t, "", "health", "--http-addr", httpAddr, "--json"); code != 0 || !json.Valid([]byte(out)) || !strings.Contains(out, `"status": 200`) {
		t.Fatalf("health --json: exit %d %q %s", code, out, errOut)
	}
	if _, errOut, code := cb(t, "", "health", "--http-addr", freeAddr(t), "--timeout", "2s"); code != 1 || !strings.Contains(errOut, "/readyz") {
		t.Fatalf("health of nothing: exit %d %s", code, errOut)
	}
}

// The sample deployment records who asked: the worker may publish audit
// events, the group imports share the requester's identity, and the auditor
// user reads the audit stream with `audit tail` and nothing else.
func TestAuditAgainstTheSampleNATSConfig(t *testing.T) {
	clearNATSEnv(t)
	s := startSample(t)
	admin, bio, auditor := as(s, "admin"), as(s, "bio"), as(s, "auditor")
	conn := `{"name":"local-bio","provider":"builtin","groups":["bio"],"secrets":["biodb*"]}`
	if _, errOut, code := cb(t, conn, append([]string{"conn", "put", "-f", "-"}, admin...)...); code != 0 {
		t.Fatalf("conn put: exit %d %s", code, errOut)
	}
	if _, errOut, code := cb(t, "", append([]string{"secret", "put", "local-bio", "biodb01", "password=sample-audit-pw-41"}, admin...)...); code != 0 {
		t.Fatalf("secret put: exit %d %s", code, errOut)
	}
	if out, errOut, code := cb(t, "", append([]string{"resolve", "bio", "local-bio", "biodb01"}, bio...)...); code != 0 || !strings.Contains(out, "sample-audit-pw-41") {
		t.Fatalf("resolve as bio: exit %d %s %s", code, out, errOut)
	}
	out, errOut, code := cb(t, "", append([]string{"--json", "audit", "tail", "--op", "resolve", "--all", "--count", "1", "--timeout", "20s"}, auditor...)...)
	if code != 0 {
		t.Fatalf("audit tail as auditor: exit %d %s %s", code, out, errOut)
	}
	var ev events.AuditEvent
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil {
		t.Fatalf("audit tail output %q: %v", out, err)
	}
	if ev.Group != "bio" || ev.Connection != "local-bio" || ev.Secret != "biodb01" || ev.Outcome != "ok" ||
		ev.Requester == nil || ev.Requester.Account != "BIO" || ev.Requester.User != "bio" {
		t.Fatalf("audit event %+v (requester %+v), want bio's resolve with its identity", ev, ev.Requester)
	}
	if strings.Contains(out, "sample-audit-pw-41") {
		t.Fatalf("audit event holds the value: %s", out)
	}
	// The auditor reads nothing else: not the registry, not the logs.
	if _, errOut, code := cb(t, "", append([]string{"conn", "ls"}, auditor...)...); code != 12 {
		t.Fatalf("conn ls as auditor: exit %d %s (want forbidden)", code, errOut)
	}
	ac := deploy.ConnectAs(t, s, "auditor")
	js, err := jetstream.New(ac.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, stream := range []string{"KV_cloudbridge_secrets", "CLOUDBRIDGE_LOGS"} {
		if _, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{}); err == nil {
			t.Fatalf("the auditor read stream %s", stream)
		}
	}
}
