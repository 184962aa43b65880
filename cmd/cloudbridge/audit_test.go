package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
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
