// Package moto starts moto, the Python AWS emulator (Secrets Manager, STS,
// SQS, EventBridge, S3, CloudWatch Logs, …), as a private server process on a
// random port for tests that need AWS services the in-repo fakes do not
// serve. moto is installed by /work/shared/tools/setup-moto (in CI by
// .ci/run) into $MOTO_CACHE/moto-root (default ~/.cache/moto) and run with
// Debian's python3.
package moto

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// Credentials and account moto accepts (any credentials work; these name the
// default account).
const (
	AccessKeyID     = "MOTOTESTKEYNOTREAL01"
	SecretAccessKey = "moto-test-secret-not-a-real-key"
	AccountID       = "123456789012"
)

// Server is a running moto server.
type Server struct {
	// URL is the endpoint of every service, http://127.0.0.1:PORT.
	URL    string
	cmd    *exec.Cmd
	out    *testenv.Buffer
	exited chan error
}

// Root is the directory moto's Python package is installed under, or "" if
// it is not installed.
func Root() string {
	cache := os.Getenv("MOTO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache", "moto")
	}
	dir := filepath.Join(cache, "moto-root", "usr", "lib", "python3", "dist-packages")
	if _, err := os.Stat(filepath.Join(dir, "moto", "server.py")); err != nil {
		return ""
	}
	return dir
}

// python is Debian's interpreter, whose dist-packages hold moto's dependencies.
const python = "/usr/bin/python3"

// Start starts moto on a random loopback port and waits until it answers; it
// is stopped when the test ends. It skips the test when moto is not
// installed, except under CI (CI=true), where it fails.
func Start(t testenv.TB) *Server {
	t.Helper()
	root := Root()
	if root == "" {
		unavailable(t, "moto is not installed (run /work/shared/tools/setup-moto)")
	}
	if _, err := os.Stat(python); err != nil {
		unavailable(t, "moto needs "+python)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(root)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting moto: %v", lastErr)
	return nil
}

func start(root string) (*Server, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	out := &testenv.Buffer{Limit: 1 << 20}
	cmd := exec.Command(python, "-m", "moto.server", "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+root, "PYTHONDONTWRITEBYTECODE=1")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", python, err)
	}
	exited := make(chan error, 1)
	s := &Server{URL: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, out: out, exited: exited}
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("moto exited: %v\n%s", err, out.String())
		case <-deadline:
			s.kill()
			<-exited
			return nil, fmt.Errorf("moto did not answer within 60s\n%s", out.String())
		case <-tick.C:
			if s.ready() {
				return s, nil
			}
		}
	}
}

func (s *Server) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/moto-api/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode < 500
}

// Reset drops every resource of every service (moto's /moto-api/reset).
func (s *Server) Reset(t testenv.TB) {
	t.Helper()
	resp, err := http.Post(s.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("moto reset: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto reset: HTTP %d", resp.StatusCode)
	}
}

// Output is what moto printed so far (for failure messages).
func (s *Server) Output() string { return s.out.String() }

func (s *Server) kill() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // our own process group
	}
}

func (s *Server) stop() {
	s.kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
}

func unavailable(t testenv.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (required under CI: .ci/run installs it with setup-moto)", why)
	}
	t.Skip(why)
}

// RequireModules skips the test (fails it under CI) unless moto's Python can
// import every module: some moto features need optional dependencies, such as
// jsonpath_ng for EventBridge rule targets (Debian: python3-jsonpath-ng).
func RequireModules(t testenv.TB, modules ...string) {
	t.Helper()
	root := Root()
	if root == "" {
		unavailable(t, "moto is not installed (run /work/shared/tools/setup-moto)")
	}
	for _, m := range modules {
		cmd := exec.Command(python, "-c", "import "+m)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+root, "PYTHONDONTWRITEBYTECODE=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			unavailable(t, fmt.Sprintf("moto's python cannot import %s (%v): install its Debian package next to moto\n%s", m, err, out))
		}
	}
}
