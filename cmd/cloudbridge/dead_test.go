package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// Dead letters end to end through the CLI: the sink rejects events (the
// fake CloudWatch's clock is 20 days ahead, so they are too old), they are
// dead-lettered; the cause fixed, replay delivers each once and removes them.
func TestDeadLettersReplayEndToEnd(t *testing.T) {
	clearNATSEnv(t)
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	srv := awsfake.New(t)
	srv.AddCredentials(awsfake.Credentials{AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret"})
	cw := srv.Logs()
	cw.SetNow(func() time.Time { return time.Now().Add(20 * 24 * time.Hour) })

	must := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cb(t, stdin, args...)
		if code != 0 {
			t.Fatalf("cloudbridge %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	conn, _ := events.Marshal(events.Connection{Name: "aws-logs", Provider: events.ProviderAWS, Groups: []string{"ops"}, Secrets: []string{},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDLOGSEXAMPLE00001", SecretAccessKey: "logs-secret", Endpoint: cw.URL()}})
	must(string(conn), "conn", "put", "-f", "-")
	block, _ := events.Marshal(events.Export{Name: "cw-app", Connection: "aws-logs", Subjects: []string{"logs.app.>"},
		CloudWatch: &events.CloudWatchSink{LogGroup: "/platform/app", LogStream: "{subject}", Create: true},
		Batch:      &events.BatchPolicy{MaxWait: events.Duration(50 * time.Millisecond)}})
	must(string(block), "export", "put", "-f", "-")
	if out := must("", "export", "get", "cw-app", "--json"); !strings.Contains(out, `"logs.app.>"`) {
		t.Fatalf("subjects HTML-escaped or missing:\n%s", out)
	}
	if out := must("", "dead", "ls", "cw-app"); !strings.Contains(out, "no dead letters") {
		t.Fatalf("empty dead ls: %s", out)
	}
	// An export that does not exist (a typo) is not_found, naming it, for
	// every dead verb; an existing one without dead letters is "none" above.
	for _, args := range [][]string{{"ls", "nosuch"}, {"show", "nosuch", "1"}, {"replay", "nosuch"}, {"purge", "nosuch"}, {"ls", "nosuch", "--json"}} {
		out, errOut, code := cb(t, "", append([]string{"dead"}, args...)...)
		if code != events.CodeNotFound.ExitCode() || !strings.Contains(errOut, `export "nosuch" does not exist`) || out != "" {
			t.Errorf("dead %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	// On the wire: subjects not HTML-escaped, the queue group named after the service.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request(events.Subjects{}.Admin(events.ResourceExports, events.VerbGet), []byte(`{"name":"cw-app"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"logs.app.>"`) {
		t.Fatalf("export get on the wire: %v %s", err, msg.Data)
	}
	info, err := nc.Request("$SRV.INFO.cloudbridge", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(info.Data), `"queue_group":"cloudbridge"`) || strings.Contains(string(info.Data), `"queue_group":"q"`) {
		t.Fatalf("service info: %v %s", err, info.Data)
	}

	const n = 5
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, fmt.Sprintf(`{"level":"info","msg":"event %d","time":%q}`, i, time.Now().UTC().Format(time.RFC3339Nano)))
	}
	must(strings.Join(lines, "\n")+"\n", "logs", "send", "logs.app.web", "-")

	var list events.DeadList
	natstest.Eventually(t, 20*time.Second, "every event dead-lettered", func() bool {
		out, _, code := cb(t, "", "dead", "ls", "cw-app", "--json")
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list.DeadLetters) == n
	})
	for _, d := range list.DeadLetters {
		if d.Reason != events.DeadTooOld || d.Subject != "logs.app.web" {
			t.Fatalf("dead letter %+v", d)
		}
	}
	if cw.Count() != 0 {
		t.Fatalf("%d events delivered although the sink rejected them", cw.Count())
	}
	// show decodes the payload; a bad filter or an unknown seq fails clearly.
	if out := must("", "dead", "show", "cw-app", strconv.FormatUint(list.DeadLetters[0].Seq, 10)); !strings.Contains(out, `"msg":"event`) {
		t.Fatalf("dead show: %s", out)
	}
	if _, _, code := cb(t, "", "dead", "show", "cw-app", "999999"); code != 13 {
		t.Fatalf("dead show of an unknown seq exited %d", code)
	}
	if _, _, code := cb(t, "", "dead", "ls", "cw-app", "--reason", "bogus"); code != 10 {
		t.Fatalf("dead ls --reason bogus exited %d", code)
	}
	if out := must("", "dead", "ls", "cw-app", "--reason", "invalid"); !strings.Contains(out, "no dead letters") {
		t.Fatalf("dead ls --reason invalid: %s", out)
	}
	if out := must("", "dead", "replay", "cw-app", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); !strings.Contains(out, "replayed 0") {
		t.Fatalf("replay of nothing: %s", out)
	}

	// The cause fixed: the sink accepts them now.
	cw.SetNow(time.Now)
	if out := must("", "dead", "replay", "cw-app", "--reason", "too_old"); !strings.Contains(out, fmt.Sprintf("replayed %d dead letter(s)", n)) {
		t.Fatalf("replay: %s", out)
	}
	natstest.Eventually(t, 20*time.Second, "every replayed event delivered", func() bool { return cw.Count() >= n })
	if out := must("", "dead", "replay", "cw-app"); !strings.Contains(out, "replayed 0") {
		t.Fatalf("second replay: %s", out)
	}
	if out := must("", "dead", "ls", "cw-app"); !strings.Contains(out, "no dead letters") {
		t.Fatalf("dead letters left after replay: %s", out)
	}
	// Each exactly once: the export's consumer has nothing left to deliver,
	// and no event arrived twice.
	natstest.Eventually(t, 20*time.Second, "export consumer drained", func() bool {
		out, _, code := cb(t, "", "dead", "ls", "cw-app", "--json")
		return code == 0 && strings.Contains(out, `"dead_letters": []`) && cw.Count() == n
	})
	seen := map[string]int{}
	cw.AllEvents(func(_, _ string, ev awsfake.LogEvent) { seen[ev.Message]++ })
	for _, l := range lines {
		if seen[l] != 1 {
			t.Fatalf("event %s delivered %d times", l, seen[l])
		}
	}

	// purge removes without replaying.
	cw.SetNow(func() time.Time { return time.Now().Add(20 * 24 * time.Hour) })
	must(`{"level":"info","msg":"doomed"}`+"\n", "logs", "send", "logs.app.web", "-")
	natstest.Eventually(t, 20*time.Second, "dead-lettered again", func() bool {
		out, _, _ := cb(t, "", "dead", "ls", "cw-app", "--json")
		return json.Unmarshal([]byte(out), &list) == nil && len(list.DeadLetters) == 1
	})
	// The block deleted, its dead letters stay listable and purgeable.
	must("", "export", "rm", "cw-app")
	if out := must("", "dead", "ls", "cw-app"); !strings.Contains(out, "logs.app.web") {
		t.Fatalf("dead letters of a deleted block: %s", out)
	}
	if out := must("", "dead", "purge", "cw-app"); !strings.Contains(out, "removed 1 dead letter(s)") {
		t.Fatalf("purge: %s", out)
	}
	// Now the name is unknown: not_found.
	if _, errOut, code := cb(t, "", "dead", "ls", "cw-app"); code != events.CodeNotFound.ExitCode() || !strings.Contains(errOut, `"cw-app"`) {
		t.Fatalf("after purge of a deleted block: exit %d %s", code, errOut)
	}
	if cw.Count() != n {
		t.Fatalf("purge delivered something: %d", cw.Count())
	}
}
