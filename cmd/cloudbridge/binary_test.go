package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The real binary: serve with the embedded NATS, the CLI against it, then
// SIGTERM: serve drains and exits 0. Built with a version by -ldflags -X, it
// prints it, and announces it in $SRV.INFO.
func TestBinaryServeAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloudbridge")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/cloudbridge/cloudbridge/internal/version.build=v1.2.3-rc.1", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	listen, httpAddr := freeAddr(t), freeAddr(t)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLOUDBRIDGE_") {
			env = append(env, kv)
		}
	}
	var logs bytes.Buffer
	serve := exec.Command(bin, "serve", "--listen", listen, "--data-dir", filepath.Join(dir, "data"), "--http-addr", httpAddr)
	serve.Env, serve.Stderr = env, &lockedWriter{w: &logs}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() { _ = serve.Process.Kill() })

	cli := func(stdin string, args ...string) (string, int) {
		cmd := exec.Command(bin, append(args, "--nats-url", "nats://"+listen)...)
		cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, code := cli("", "conn", "ls", "--timeout", "1s"); code == 0 && strings.Contains(out, "no connections") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, code := exec.Command(bin, "version").Output(); code != nil || !strings.HasPrefix(string(out), "cloudbridge 1.2.3-rc.1 (go") {
		t.Fatalf("version: %v %q", code, out)
	}
	if v := srvVersion(t, "nats://"+listen); v != "1.2.3-rc.1" {
		t.Fatalf("$SRV.INFO version %q, want 1.2.3-rc.1", v)
	}
	if out, code := cli(`{"name":"local-bio","provider":"builtin","groups":["bio"],"secrets":["biodb*"]}`, "conn", "put", "-f", "-"); code != 0 {
		t.Fatalf("conn put: %d %s", code, out)
	}
	if out, code := cli("", "secret", "put", "local-bio", "biodb01", "login=user01", "password=password01"); code != 0 {
		t.Fatalf("secret put: %d %s", code, out)
	}
	out, code := cli("", "resolve", "bio", "local-bio", "biodb01", "--json")
	if code != 0 || !strings.Contains(out, `"password": "password01"`) {
		t.Fatalf("resolve: %d %s", code, out)
	}
	if _, code := cli("", "resolve", "chem", "local-bio", "biodb01"); code != 12 {
		t.Fatalf("forbidden resolve exited %d, want 12", code)
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "cloudbridge worker stopped") {
		t.Fatalf("no orderly stop in the logs:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "password01") {
		t.Fatal("the logs contain the secret")
	}
}
