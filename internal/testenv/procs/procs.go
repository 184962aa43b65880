// Package procs runs the real binaries for out-of-process tests: nats-server
// 2.15 (built from the module's github.com/nats-io/nats-server/v2) as single
// servers or clusters that can be killed with SIGKILL and restarted on the
// same ports and store, and cloudbridge workers as processes that can be
// signalled or killed.
package procs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// Binaries are the paths of the built programs.
type Binaries struct {
	NATSServer  string
	Cloudbridge string
}

// Build builds nats-server and cloudbridge into a fresh directory of the
// test. The Go build cache makes every build after the first one quick.
func Build(t testenv.TB) Binaries {
	t.Helper()
	b, err := BuildDir(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

// BuildDir builds nats-server and cloudbridge into dir (for a TestMain that
// builds once for every test of its package).
func BuildDir(dir string) (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, fmt.Errorf("finding the module root: %v", err)
	}
	b := Binaries{NATSServer: filepath.Join(dir, "nats-server"), Cloudbridge: filepath.Join(dir, "cloudbridge")}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, target := range []struct{ out, pkg string }{
		{b.NATSServer, "github.com/nats-io/nats-server/v2"},
		{b.Cloudbridge, "./cmd/cloudbridge"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-o", target.out, target.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", target.pkg, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("no caller information")
	}
	// file is <root>/internal/testenv/procs/procs.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", "..")), nil
}

// FreePort returns a loopback port that is free now, below the ephemeral
// range and not given out before in this process (see testenv.FreePort), so
// that a node keeps its ports across kills and restarts.
func FreePort(t testenv.TB) int {
	t.Helper()
	return testenv.MustFreePort(t)
}

// Node is one nats-server process.
type Node struct {
	Name        string
	Port        int
	ClusterPort int
	Dir         string
	t           testenv.TB
	bin         string
	conf        string
	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	logs        *testenv.Buffer
}

// ClientURL is the node's client URL.
func (n *Node) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Cluster is a set of nats-server processes routed to each other (a single
// node when it has one).
type Cluster struct {
	Nodes []*Node
	t     testenv.TB
}

// StartCluster starts size nats-server processes with JetStream, routed into
// one cluster when size > 1, and waits until JetStream answers on every node.
// They are killed when the test ends.
func StartCluster(t testenv.TB, bins Binaries, size int) *Cluster {
	t.Helper()
	c := LaunchCluster(t, bins, size)
	c.WaitReady(60 * time.Second)
	return c
}

// LaunchCluster starts the processes of a cluster as StartCluster does but
// returns at once, while the cluster is still forming (for tests of what
// starts together with it). They are killed when the test ends.
func LaunchCluster(t testenv.TB, bins Binaries, size int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	for i := 0; i < size; i++ {
		n := &Node{Name: fmt.Sprintf("n%d", i+1), Port: FreePort(t), Dir: t.TempDir(), t: t, bin: bins.NATSServer}
		if size > 1 {
			n.ClusterPort = FreePort(t)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		n.writeConfig(c.Nodes)
	}
	for _, n := range c.Nodes {
		n.Start()
	}
	t.Cleanup(c.Kill)
	return c
}

// WaitListening waits until every running node accepts TCP connections on
// its client port (JetStream may still be forming).
func (c *Cluster) WaitListening(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		for {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if n.exited() {
				c.t.Fatalf("nats-server %s exited before listening on %d\n%s", n.Name, n.Port, n.Logs())
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("nats-server %s: not listening after %s: %v\n%s", n.Name, within, err, n.Logs())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Kill kills every node (SIGKILL) and waits for them to end.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// Node is the node named name (server_name n1, n2, …, as JetStream's
// cluster info names a leader), or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// URLs is every node's client URL, comma-separated, for a client that fails over.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.ClientURL()
	}
	return strings.Join(urls, ",")
}

// WaitReady waits until every running node answers a JetStream request.
func (c *Cluster) WaitReady(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		for {
			err := n.jetStreamReady()
			if err == nil {
				break
			}
			if n.exited() {
				c.t.Fatalf("nats-server %s exited before JetStream was ready\n%s", n.Name, n.Logs())
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("nats-server %s: JetStream not ready after %s: %v\n%s", n.Name, within, err, n.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (n *Node) jetStreamReady() error {
	nc, err := nats.Connect(n.ClientURL(), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

func (n *Node) writeConfig(all []*Node) {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", n.Name, n.Port)
	fmt.Fprintf(&b, "jetstream { store_dir: %q }\n", filepath.Join(n.Dir, "js"))
	if n.ClusterPort != 0 {
		var routes []string
		for _, o := range all {
			if o != n {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.ClusterPort))
			}
		}
		fmt.Fprintf(&b, "cluster { name: cbtest\n listen: 127.0.0.1:%d\n routes: [%s] }\n", n.ClusterPort, strings.Join(routes, ", "))
	}
	n.conf = filepath.Join(n.Dir, "nats.conf")
	if err := os.WriteFile(n.conf, []byte(b.String()), 0o600); err != nil {
		n.t.Fatalf("writing %s: %v", n.conf, err)
	}
}

// Start starts (or restarts) the node on its ports and store.
func (n *Node) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("nats-server %s already running", n.Name)
	}
	if n.logs == nil {
		n.logs = &testenv.Buffer{}
	}
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("starting nats-server %s: %v", n.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
}

// CPU is the CPU time (user and system) the node's process has used so far,
// or 0 when it is not running or the system does not say (not Linux).
func (n *Node) CPU() time.Duration {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	return processCPU(cmd.Process.Pid)
}

// Running reports whether the node's process is up.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// exited reports whether the node was started and its process has ended
// without Kill (it failed to start, e.g. a port already in use).
func (n *Node) exited() bool {
	n.mu.Lock()
	done := n.done
	running := n.cmd != nil
	n.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Logs is what the node printed so far.
func (n *Node) Logs() string {
	if n.logs == nil {
		return ""
	}
	return n.logs.String()
}

// MasterKey is a fixed test master key (base64 of 32 bytes) for workers that
// must share sealed records.
const MasterKey = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

// Worker is a cloudbridge process.
type Worker struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	logs *testenv.Buffer
}

// StartWorker runs the cloudbridge binary with args (e.g. "serve",
// "--nats-url", …) and an environment without CLOUDBRIDGE_ variables plus
// env. It is killed when the test ends.
func StartWorker(t testenv.TB, bins Binaries, env []string, args ...string) *Worker {
	t.Helper()
	w := &Worker{logs: &testenv.Buffer{}, done: make(chan struct{})}
	cmd := exec.Command(bins.Cloudbridge, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLOUDBRIDGE_") && !strings.HasPrefix(kv, "NATS_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting cloudbridge: %v", err)
	}
	w.cmd = cmd
	go func() { w.err = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { w.Kill() })
	return w
}

// CPU is the CPU time (user and system) the worker's process has used so
// far, or 0 when the system does not say (not Linux).
func (w *Worker) CPU() time.Duration { return processCPU(w.cmd.Process.Pid) }

// processCPU reads a process's user and system CPU time from /proc (0 when
// it cannot).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the 3rd field of the file, utime the 14th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	// Clock ticks; USER_HZ is 100 on every Linux Go supports.
	return time.Duration(u+s) * 10 * time.Millisecond
}

// Signal sends sig to the worker.
func (w *Worker) Signal(sig os.Signal) { _ = w.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to end.
func (w *Worker) Kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

// Wait waits up to within for the worker to exit and returns its exit code
// (-1 when it did not exit in time or was killed by a signal).
func (w *Worker) Wait(within time.Duration) (code int, exited bool) {
	select {
	case <-w.done:
	case <-time.After(within):
		return -1, false
	}
	if w.cmd.ProcessState == nil {
		return -1, true
	}
	return w.cmd.ProcessState.ExitCode(), true
}

// Exited reports whether the worker's process has ended.
func (w *Worker) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Logs is what the worker printed so far.
func (w *Worker) Logs() string { return w.logs.String() }

// HTTPAddr waits up to within for the worker's start-up log line ("cloudbridge
// worker started", JSON log format) and returns its monitoring address (the
// real port behind --http-addr 127.0.0.1:0). ok is false when the worker
// exited or did not start in time.
func (w *Worker) HTTPAddr(within time.Duration) (addr string, ok bool) {
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(w.Logs(), "\n") {
			if !strings.Contains(line, "cloudbridge worker started") {
				continue
			}
			var ev struct {
				HTTP string `json:"http"`
			}
			if json.Unmarshal([]byte(line), &ev) == nil && ev.HTTP != "" {
				return ev.HTTP, true
			}
		}
		if w.Exited() || time.Now().After(deadline) {
			return "", false
		}
		select {
		case <-w.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Ready reports whether the worker's /readyz at addr (see HTTPAddr) answers 200.
func Ready(addr string) bool {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}
