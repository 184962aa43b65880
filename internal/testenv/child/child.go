// Package child runs a test's helper in a process of its own: the test
// binary re-executed to run one test function (which the helper's own
// environment variable switches on), talking over its standard input (a
// command a line) and output (answers a line, each behind a prefix; other
// output is the test framework's and is ignored). Benchmarks use it to keep
// a load generator or a fake's CPU out of the measured process.
package child

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Process is a running child.
type Process struct {
	tb    testing.TB
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

// Start re-executes the test binary to run test (a test function's name)
// with env added to its environment; answers are the lines of its output
// that begin with prefix (the prefix removed). The process is killed at the
// test's cleanup if it is still running.
func Start(tb testing.TB, name, test, prefix string, env ...string) *Process {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Process{tb: tb, name: name, cmd: cmd, in: in, lines: make(chan string, 16)}
	tb.Cleanup(func() { _ = in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				p.lines <- line
			}
		}
	}()
	return p
}

// Send writes a command line.
func (p *Process) Send(cmd string) {
	p.tb.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.tb.Fatal(err)
	}
}

// Next is the next answer, waiting up to timeout; the test fails if the
// child ended or did not answer in time.
func (p *Process) Next(timeout time.Duration) string {
	p.tb.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.tb.Fatalf("%s ended", p.name)
		}
		return line
	case <-t.C:
		p.tb.Fatalf("%s did not answer within %v", p.name, timeout)
	}
	return ""
}

// Ask sends cmd and returns the next answer.
func (p *Process) Ask(cmd string, timeout time.Duration) string {
	p.tb.Helper()
	p.Send(cmd)
	return p.Next(timeout)
}

// Stop closes the child's input and waits for it to end.
func (p *Process) Stop() {
	_ = p.in.Close()
	_ = p.cmd.Wait()
}
