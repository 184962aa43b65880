package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

// freeAddr is a loopback address to give a process (see testenv.FreePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(testenv.MustFreePort(t))
}

// serve runs until its context is cancelled (what SIGINT/SIGTERM do in main)
// and then exits 0, with its state on disk.
func TestServeRunsAndShutsDownCleanly(t *testing.T) {
	for _, k := range []string{"CLOUDBRIDGE_NATS_URL", "CLOUDBRIDGE_MASTER_KEY", "CLOUDBRIDGE_MASTER_KEY_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	listen, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		exit <- run(ctx, []string{"serve", "--listen", listen, "--data-dir", dir, "--http-addr", httpAddr, "--log-level", "debug"},
			strings.NewReader(""), &strings.Builder{}, &lockedWriter{w: &stderr})
	}()
	url := "nats://" + listen
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, code := cb(t, "", "conn", "ls", "--nats-url", url, "--timeout", "1s")
		if code == 0 && strings.Contains(out, "no connections") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up: exit %d %s", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, code := cb(t, "", "conn", "put", "-f", "-", "--nats-url", url); code != 10 {
		// stdin is empty: bad_request, nothing stored
		t.Fatalf("conn put with empty stdin exited %d", code)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("serve exited %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	fi, err := os.Stat(filepath.Join(dir, "master.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated master key: %v %v", fi, err)
	}
}
