package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestSubjectsTableListsEveryEndpoint: every endpoint a worker announces in
// $SRV.INFO is a row of the README's Subjects table (exports.status was
// missing from it).
func TestSubjectsTableListsEveryEndpoint(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Subjects\n")
	end := strings.Index(readme, "\n### Errors\n")
	if start < 0 || end < start {
		t.Fatal("README has no Subjects section")
	}
	rowRE := regexp.MustCompile("(?m)^\\| `([^`]+)`")
	braceRE := regexp.MustCompile(`\{([^}]*)\}`)
	listed := map[string]bool{}
	for _, m := range rowRE.FindAllStringSubmatch(readme[start:end], -1) {
		subj := regexp.MustCompile(`<[a-z]+>`).ReplaceAllString(m[1], "*")
		if bm := braceRE.FindStringSubmatchIndex(subj); bm != nil {
			for _, alt := range strings.Split(subj[bm[2]:bm[3]], ",") {
				listed[subj[:bm[0]]+alt+subj[bm[1]:]] = true
			}
			continue
		}
		listed[subj] = true
	}
	if len(listed) < 10 {
		t.Fatalf("only %d subjects read from the table: %v", len(listed), listed)
	}

	nc, err := nats.Connect(startWorker(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, "$SRV.INFO.cloudbridge", nil)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Endpoints []struct{ Name, Subject string }
	}
	if err := json.Unmarshal(msg.Data, &info); err != nil || len(info.Endpoints) < 10 {
		t.Fatalf("$SRV.INFO: %v %s", err, msg.Data)
	}
	for _, e := range info.Endpoints {
		if !listed[e.Subject] {
			t.Errorf("endpoint %s (%s) is not in the README's Subjects table", e.Name, e.Subject)
		}
	}
}
