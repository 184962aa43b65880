package procs

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The harness itself: a 3-node cluster keeps an R3 stream writable while one
// node is killed, and the node comes back on its ports and store.
func TestClusterKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server processes")
	}
	bins := Build(t)
	c := StartCluster(t, bins, 3)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Every node answers JetStream requests once the cluster is ready, but
	// the meta leader may not count all three peers as current yet: an R3
	// stream can be refused "no suitable peers for placement" for a moment
	// (as the workers' start-up treats it, a transient refusal).
	for {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		if err == nil {
			break
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "no suitable peers") {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	publish := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "t.x", []byte("x"))
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish: %v", err)
				}
			}
		}
	}
	publish(10)
	c.Nodes[0].Kill()
	publish(10)
	c.Nodes[0].Start()
	c.WaitReady(60 * time.Second)
	publish(10)
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != 30 {
		t.Fatalf("stream holds %d messages, want 30", got)
	}
}

// A worker process exits 0 on SIGTERM.
func TestWorkerSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	bins := Build(t)
	c := StartCluster(t, bins, 1)
	w := StartWorker(t, bins, []string{"CLOUDBRIDGE_MASTER_KEY=" + MasterKey}, "serve", "--nats-url", c.URLs(), "--http-addr", "127.0.0.1:0")
	deadline := time.Now().Add(30 * time.Second)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for {
		if _, err := nc.Request("$SRV.PING.cloudbridge", nil, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) || w.Exited() {
			t.Fatalf("worker did not register:\n%s", w.Logs())
		}
	}
	w.Signal(syscall.SIGTERM)
	code, exited := w.Wait(30 * time.Second)
	if !exited || code != 0 {
		t.Fatalf("worker exit %d (exited %v):\n%s", code, exited, w.Logs())
	}
}
