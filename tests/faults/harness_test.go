package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

// bins are the binaries built once for the package (see TestMain).
var (
	binsOnce sync.Once
	bins     procs.Binaries
	binsErr  error
	binsDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binsDir != "" {
		_ = os.RemoveAll(binsDir)
	}
	os.Exit(code)
}

// binaries builds nats-server and cloudbridge once per test binary.
func binaries(t *testing.T) procs.Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("runs nats-server and cloudbridge processes")
	}
	binsOnce.Do(func() {
		binsDir, binsErr = os.MkdirTemp("", "cloudbridge-faults-")
		if binsErr == nil {
			bins, binsErr = procs.BuildDir(binsDir)
		}
	})
	if binsErr != nil {
		t.Fatalf("building: %v", binsErr)
	}
	return bins
}

// shutdownTimeout is the workers' --shutdown-timeout; a SIGTERMed worker must
// exit within it plus stopMargin.
const (
	shutdownTimeout = 10 * time.Second
	stopMargin      = 5 * time.Second
)

// serveHelp is `cloudbridge serve --help`, read once, to pass flags that
// only some versions have.
var (
	helpOnce sync.Once
	help     string
)

// startWorker starts a worker on the cluster with R3 buckets and streams.
func startWorker(t *testing.T, c *procs.Cluster, extra ...string) *procs.Worker {
	t.Helper()
	return startWorkerEnv(t, c, nil, extra...)
}

// startWorkerEnv is startWorker with more environment.
func startWorkerEnv(t *testing.T, c *procs.Cluster, env []string, extra ...string) *procs.Worker {
	t.Helper()
	b := binaries(t)
	helpOnce.Do(func() {
		out, _ := exec.Command(b.Cloudbridge, "serve", "--help").CombinedOutput()
		help = string(out)
	})
	args := []string{"serve", "--nats-url", c.URLs(), "--http-addr", "127.0.0.1:0",
		"--kv-replicas", fmt.Sprint(len(c.Nodes)), "--shutdown-timeout", shutdownTimeout.String(), "--log-level", "info"}
	if strings.Contains(help, "--allow-endpoints") {
		// The AWS fake listens on loopback.
		args = append(args, "--allow-endpoints", "127.0.0.1")
	}
	args = append(args, extra...)
	return procs.StartWorker(t, b, append([]string{"CLOUDBRIDGE_MASTER_KEY=" + procs.MasterKey}, env...), args...)
}

// connect is a client connection that fails over between the nodes forever.
func connect(t *testing.T, c *procs.Cluster) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// admin sends an admin request, retrying transient failures until within.
func admin(t *testing.T, cl *events.Client, resource, verb string, req, out any, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := cl.Request(ctx, cl.Subjects().Admin(resource, verb), req, out)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin %s %s: %v", resource, verb, err)
		}
	}
}

// instances is the number of distinct workers answering $SRV.PING.cloudbridge
// within one round of wait.
func instances(nc *nats.Conn, wait time.Duration) int {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING.cloudbridge", inbox, nil); err != nil {
		return 0
	}
	ids := map[string]bool{}
	deadline := time.Now().Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return len(ids)
		}
		var ping struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(msg.Data, &ping) == nil && ping.ID != "" {
			ids[ping.ID] = true
		}
	}
}

// waitInstances waits until n workers answer $SRV.PING.
func waitInstances(t *testing.T, nc *nats.Conn, n int, within time.Duration, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := instances(nc, 500*time.Millisecond)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers answer $SRV.PING after %s\n%s", got, n, within, logs())
		}
	}
}

// eventually polls cond until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s\n%s", what, within, logs())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// stopWorker SIGTERMs w and asserts it exits 0 within the shutdown timeout
// plus a margin.
func stopWorker(t *testing.T, name string, w *procs.Worker) time.Duration {
	t.Helper()
	start := time.Now()
	w.Signal(syscall.SIGTERM)
	code, exited := w.Wait(shutdownTimeout + stopMargin)
	took := time.Since(start)
	if !exited || code != 0 {
		t.Errorf("worker %s: SIGTERM: exit %d (exited %v) after %s\n%s", name, code, exited, took.Round(time.Millisecond), tail(w.Logs(), 40))
	}
	return took
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
