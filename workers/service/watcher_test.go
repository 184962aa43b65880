package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestStoppedWatcherIsNotReady: when a registry watcher stops (its bucket's
// stream deleted under it; or the registry's check finds it missing first), /readyz says so and the worker leaves the queue
// groups; once the bucket is back and watched again, it is ready again.
func TestStoppedWatcherIsNotReady(t *testing.T) {
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(context.Background(), "cloudbridge_exports"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + w.HTTPAddr()
	natstest.Eventually(t, 30*time.Second, "/readyz to fail", func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "cloudbridge_exports")
	})
	natstest.Eventually(t, 10*time.Second, "the worker to leave the queue groups", func() bool { return w.ServiceID() == "" })
	natstest.Eventually(t, 10*time.Second, "no instance to answer $SRV.PING", func() bool { return srvPings(t, nc) == 0 })
	// The bucket is back: the worker watches it again and takes requests.
	if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "cloudbridge_exports", History: 1}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, "/readyz to pass again", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200 && w.ServiceID() != ""
	})
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	// Whichever saw it first says why: the watcher that stopped, or the
	// registry's check of its buckets (every 5 s) that found it deleted.
	logs := w.logs.String()
	if !strings.Contains(logs, "registry watcher stopped") && !strings.Contains(logs, "registry bucket missing") {
		t.Fatal("the stopped watcher (or the missing bucket) was not logged")
	}
	if !strings.Contains(logs, "worker not ready") {
		t.Fatal("the worker's not being ready was not logged")
	}
}

// TestSecretsBucketCreatedAgainDropsCachedSecrets: a builtin secret resolved
// (and cached) before its bucket was deleted and created again is not served
// from the cache afterwards: the new bucket does not hold it.
func TestSecretsBucketCreatedAgainDropsCachedSecrets(t *testing.T) {
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	rep, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatal(err)
	}
	if string(rep.Credentials["password"]) != `"password01"` {
		t.Fatal("the secret put was not resolved")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := js.DeleteKeyValue(ctx, "cloudbridge_secrets"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + w.HTTPAddr()
	natstest.Eventually(t, 30*time.Second, "/readyz to fail", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 503
	})
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cloudbridge_secrets", History: 1, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, "/readyz to pass again", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200 && w.ServiceID() != ""
	})
	_, err = resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	var re *events.Error
	if !errors.As(err, &re) || re.Code != events.CodeNotFound {
		t.Fatalf("after the bucket was created again: %v, want %s", err, events.CodeNotFound)
	}
}
