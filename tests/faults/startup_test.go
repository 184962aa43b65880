package faults

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// startRounds is how many times TestStartWithFreshCluster forms a fresh
// cluster and starts three workers on it at once (issue 9 asks for 20; two
// of ten used to fail with "binding bucket …: context deadline exceeded").
const startRounds = 20

// Three workers started together with a 3-node cluster that is still forming
// (the processes listen, nothing waits for JetStream) all come up:
// every one logs its start, answers /readyz 200 and $SRV.PING, 20 times in a
// row, each time on a fresh cluster with fresh stores.
func TestStartWithFreshCluster(t *testing.T) {
	b := binaries(t)
	var took []time.Duration
	for round := range startRounds {
		t.Run(fmt.Sprintf("round%02d", round+1), func(t *testing.T) {
			start := time.Now()
			c := procs.LaunchCluster(t, b, 3)
			// The client ports are up; JetStream's meta group and the
			// routes are still forming. (Start-up against NATS not yet
			// listening is TestWorkerWaitsForNATS.)
			c.WaitListening(30 * time.Second)
			workers := make([]*procs.Worker, 3)
			for i := range workers {
				workers[i] = startWorker(t, c)
			}
			logs := func() string {
				var sb strings.Builder
				for i, w := range workers {
					fmt.Fprintf(&sb, "--- worker %d (exited %v):\n%s\n", i, w.Exited(), tail(w.Logs(), 30))
				}
				return sb.String()
			}
			for i, w := range workers {
				addr, ok := w.HTTPAddr(90 * time.Second)
				if !ok {
					t.Fatalf("worker %d did not start (exited %v)\n%s", i, w.Exited(), logs())
				}
				eventually(t, 30*time.Second, fmt.Sprintf("worker %d /readyz 200", i), func() bool { return procs.Ready(addr) }, logs)
			}
			nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			waitInstances(t, nc, 3, 30*time.Second, logs)
			for i, w := range workers {
				if w.Exited() {
					t.Fatalf("worker %d exited\n%s", i, logs())
				}
			}
			took = append(took, time.Since(start))
			if os.Getenv("FAULTS_DEBUG") != "" {
				t.Log(logs())
			}
		})
	}
	if len(took) > 0 {
		slices.Sort(took)
		t.Logf("%d rounds: three workers ready on a fresh 3-node cluster in min %s, median %s, max %s",
			len(took), took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	}
}

// connectFailed is the worker's (rate-limited) log line of a failed first
// connection to NATS.
const connectFailed = "connecting to NATS: failed, retrying"

// TestWorkerWaitsForNATS: a worker started while nothing listens on its NATS
// port (connection refused) keeps trying, logging the failures, and becomes
// ready once a nats-server starts there.
func TestWorkerWaitsForNATS(t *testing.T) {
	b := binaries(t)
	c := procs.LaunchCluster(t, b, 1)
	c.WaitListening(30 * time.Second)
	n := c.Nodes[0]
	n.Kill() // its port is known and now refuses connections
	w := startWorker(t, c)
	logs := func() string {
		return fmt.Sprintf("--- worker (exited %v):\n%s\n--- nats:\n%s", w.Exited(), tail(w.Logs(), 30), tail(n.Logs(), 10))
	}
	eventually(t, 30*time.Second, "a failed connection attempt logged", func() bool {
		return strings.Contains(w.Logs(), connectFailed) || w.Exited()
	}, logs)
	if w.Exited() {
		t.Fatalf("the worker exited instead of waiting for NATS\n%s", logs())
	}
	n.Start()
	addr, ok := w.HTTPAddr(90 * time.Second)
	if !ok {
		t.Fatalf("the worker did not start once NATS was up\n%s", logs())
	}
	eventually(t, 30*time.Second, "/readyz 200", func() bool { return procs.Ready(addr) }, logs)
	nc := connect(t, c)
	waitInstances(t, nc, 1, 30*time.Second, logs)
	stopWorker(t, "the worker", w)
}

// TestSIGTERMWhileWaitingForNATS: a worker still waiting for its NATS server
// exits 0 promptly on SIGTERM.
func TestSIGTERMWhileWaitingForNATS(t *testing.T) {
	b := binaries(t)
	port := procs.FreePort(t)
	w := procs.StartWorker(t, b, []string{"CLOUDBRIDGE_MASTER_KEY=" + procs.MasterKey}, "serve",
		"--nats-url", "nats://127.0.0.1:"+strconv.Itoa(port), "--http-addr", "127.0.0.1:0",
		"--shutdown-timeout", shutdownTimeout.String(), "--log-level", "info")
	logs := func() string { return fmt.Sprintf("--- worker (exited %v):\n%s", w.Exited(), tail(w.Logs(), 30)) }
	eventually(t, 30*time.Second, "a failed connection attempt logged", func() bool {
		return strings.Contains(w.Logs(), connectFailed) || w.Exited()
	}, logs)
	if w.Exited() {
		t.Fatalf("the worker exited instead of waiting for NATS\n%s", logs())
	}
	sent := time.Now()
	w.Signal(syscall.SIGTERM)
	// Promptly: well within the shutdown timeout (it has nothing to finish).
	code, exited := w.Wait(5 * time.Second)
	if !exited {
		t.Fatalf("the worker did not exit within 5s of SIGTERM\n%s", logs())
	}
	if code != 0 {
		t.Fatalf("the worker exited %d on SIGTERM while waiting for NATS, want 0\n%s", code, logs())
	}
	t.Logf("exited 0 %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
}
