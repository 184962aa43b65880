package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func stopWorker(t *testing.T, w *worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRekeyRotatesTheMasterKey(t *testing.T) {
	srv := natstest.Server(t)
	oldKey, newKey := newMasterKey(t), newMasterKey(t)
	dir := t.TempDir()
	oldFile := filepath.Join(dir, "old.key")
	if err := os.WriteFile(oldFile, []byte(oldKey), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, joinedConfig(srv.ClientURL(), oldKey))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	stopWorker(t, w)

	// A worker with only the new key cannot read the old records: it is not
	// ready, says why, and takes no requests.
	w = startWorker(t, joinedConfig(srv.ClientURL(), newKey))
	if code, body := httpGet(t, "http://"+w.HTTPAddr()+"/readyz"); code != 503 || !strings.Contains(body, "master key") {
		t.Fatalf("/readyz with the wrong key: %d %q, want 503 naming the master key", code, body)
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("with the wrong key: %v, want no worker to answer", err)
	}
	if !strings.Contains(w.logs.String(), "unreadable connection record") {
		t.Fatal("an unreadable record was not logged")
	}
	stopWorker(t, w)

	// New key plus the previous one: reads, then rekey re-seals both records.
	cfg := joinedConfig(srv.ClientURL(), newKey)
	cfg.PreviousMasterKeyFile = oldFile
	w = startWorker(t, cfg)
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatalf("with the previous key: %v", err)
	}
	ctx := context.Background()
	var rep events.RekeyReply
	if err := c.Request(ctx, c.Subjects().AdminRekey(), events.Empty{}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Resealed != 2 || rep.Current == "" || rep.Failed == nil || len(rep.Failed) != 0 {
		t.Fatalf("rekey = %+v, want 2 records", rep)
	}
	if err := c.Request(ctx, c.Subjects().AdminRekey(), events.Empty{}, &rep); err != nil || rep.Resealed != 0 {
		t.Fatalf("second rekey = %+v %v, want 0", rep, err)
	}
	stopWorker(t, w)

	// The new key alone now reads everything.
	startWorker(t, joinedConfig(srv.ClientURL(), newKey))
	got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatalf("after rekey: %v", err)
	}
	if p, _ := got.String("password"); p != "password01" {
		t.Fatalf("password %q", p)
	}
}
