package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func TestAuditTailAndFingerprint(t *testing.T) {
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	file := filepath.Join(t.TempDir(), "local-bio.json")
	if err := os.WriteFile(file, []byte(`{"name":"local-bio","provider":"builtin","groups":["bio"],"secrets":["biodb*"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"conn", "put", "-f", file},
		{"secret", "put", "local-bio", "biodb01", "login=user01", "password=password01"},
		{"resolve", "bio", "local-bio", "biodb01"},
		{"resolve", "bio", "local-bio", "biodb01"},
	} {
		if out, errOut, code := cb(t, "", args...); code != 0 {
			t.Fatalf("cloudbridge %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if _, _, code := cb(t, "", "resolve", "chem", "local-bio", "biodb01"); code == 0 {
		t.Fatal("chem may not use local-bio")
	}
	fp, errOut, code := cb(t, "", "audit", "fingerprint", "local-bio", "biodb01")
	fp = strings.TrimSpace(fp)
	if code != 0 || len(fp) != 64 {
		t.Fatalf("audit fingerprint: exit %d %q %s", code, fp, errOut)
	}
	out, errOut, code := cb(t, "", "audit", "tail", "--all", "--count", "2", "--op", "resolve", "--group", "bio", "--conn", "local-bio", "--json")
	if code != 0 {
		t.Fatalf("audit tail: exit %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit tail printed %d lines:\n%s", len(lines), out)
	}
	for i, l := range lines {
		var ev events.AuditEvent
		if err := events.Decode([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if ev.Op != "resolve" || ev.Group != "bio" || ev.Outcome != "ok" || ev.Fingerprint != fp || ev.Cached != (i == 1) {
			t.Fatalf("event %d: %+v (fingerprint from the CLI %s)", i, ev, fp)
		}
		if strings.Contains(l, "password01") || strings.Contains(l, "user01") {
			t.Fatalf("audit event holds the value: %s", l)
		}
	}
	// The forbidden request, in the table, by group.
	out, errOut, code = cb(t, "", "audit", "tail", "--all", "--count", "1", "--group", "chem")
	if code != 0 || !strings.Contains(out, "forbidden") || !strings.Contains(out, "OUTCOME") {
		t.Fatalf("audit tail --group chem: exit %d\n%s%s", code, out, errOut)
	}
	// Admin events, by op.
	out, _, code = cb(t, "", "audit", "tail", "--all", "--count", "3", "--op", "admin", "--json")
	var verbs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev events.AuditEvent
		_ = json.Unmarshal([]byte(l), &ev)
		verbs = append(verbs, ev.Verb)
	}
	if code != 0 || strings.Join(verbs, ",") != "connections-put,secrets-put,audit-fingerprint" {
		t.Fatalf("admin events: %v (exit %d)\n%s", verbs, code, out)
	}
	if _, _, code := cb(t, "", "audit", "tail", "--op", "bogus"); code != 2 {
		t.Fatalf("--op bogus: exit %d, want 2", code)
	}
}

// TestAuditTailLastOfTheFilter: --last N with filters starts with the last N
// events that match them, however many others were stored since (it started
// with the stream's last N, which held none of them, and waited).
func TestAuditTailLastOfTheFilter(t *testing.T) {
	url := startWorker(t)
	t.Setenv("CLOUDBRIDGE_NATS_URL", url)
	for _, args := range [][]string{
		{"conn", "put", "-f", "-"},
		{"secret", "put", "local-bio", "biodb01", "login=user01"},
		{"secret", "put", "local-bio", "biodb02", "login=user02"},
		{"secret", "put", "local-bio", "biodb03", "login=user03"},
		{"resolve", "bio", "local-bio", "biodb01"},
		{"resolve", "bio", "local-bio", "biodb02"},
		{"resolve", "bio", "local-bio", "biodb03"},
	} {
		if out, errOut, code := cb(t, `{"name":"local-bio","provider":"builtin","groups":["bio"],"secrets":["biodb*"]}`, args...); code != 0 {
			t.Fatalf("cloudbridge %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	// More admin events after them than the first window read back (256).
	const others = 300
	for i := range others {
		if out, errOut, code := cb(t, "", "conn", "ls"); code != 0 {
			t.Fatalf("conn ls %d: exit %d\n%s%s", i, code, out, errOut)
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
	natstest.Eventually(t, 20*time.Second, "every audit event stored", func() bool {
		st, err := js.Stream(context.Background(), events.Subjects{}.AuditStream())
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs >= 7+others
	})
	tail := func(args ...string) []events.AuditEvent {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		args = append([]string{"audit", "tail", "--json"}, args...)
		if code := run(ctx, args, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errb.String())
		}
		var evs []events.AuditEvent
		for _, l := range strings.Fields(out.String()) {
			var ev events.AuditEvent
			if err := events.Decode([]byte(l), &ev); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			evs = append(evs, ev)
		}
		return evs
	}
	secrets := func(evs []events.AuditEvent) string {
		var s []string
		for _, ev := range evs {
			what := ev.Op
			if ev.Verb != "" {
				what = ev.Verb
			}
			s = append(s, what+":"+ev.Secret)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--group", "bio", "--last", "2", "--count", "2"}, "resolve:biodb02,resolve:biodb03"},
		{[]string{"--op", "resolve", "--conn", "local-bio", "--last", "1", "--count", "1"}, "resolve:biodb03"},
		{[]string{"--group", "bio", "--last", "50", "--count", "3"}, "resolve:biodb01,resolve:biodb02,resolve:biodb03"},
		// --conn alone is filtered by the events (admin events name it too).
		{[]string{"--conn", "local-bio", "--last", "2", "--count", "2"}, "resolve:biodb02,resolve:biodb03"},
		// Fewer matches than asked for: all of them.
		{[]string{"--op", "admin", "--conn", "local-bio", "--last", "1000", "--count", "4"},
			"connections-put:,secrets-put:biodb01,secrets-put:biodb02,secrets-put:biodb03"},
	} {
		if got := secrets(tail(tc.args...)); got != tc.want {
			t.Errorf("audit tail %v: %s, want %s", tc.args, got, tc.want)
		}
	}
}
