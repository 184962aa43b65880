package bus

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartEmbeddedUnusableDataDir: a --data-dir the server cannot store
// under fails before the server starts (not after the ready timeout) with a
// *DataDirError naming the directory and carrying the OS error.
func TestStartEmbeddedUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{"proc": "/proc/cloudbridge-nosuch/data", "file": file, "under a file": filepath.Join(file, "sub")}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(t.TempDir(), "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cases["read-only"] = ro
	}
	for name, dir := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := StartEmbedded("127.0.0.1:0", dir)
			if err == nil {
				e.Shutdown()
				t.Fatalf("started with --data-dir %s", dir)
			}
			var de *DataDirError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), "--data-dir") || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %v (%T): want a *DataDirError naming --data-dir and %s", err, err, dir)
			}
			var pe *os.PathError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v: want the OS error", err)
			}
		})
	}
}

// TestStartEmbeddedServerError: a server that fails to start for a reason
// of its own (here: it cannot listen on an address that is not this host's,
// with a port to choose, so not checked before) fails with the server's
// error as soon as it reports it ("did not start"), not after the ready
// timeout without the cause ("did not become ready").
func TestStartEmbeddedServerError(t *testing.T) {
	e, err := StartEmbedded("192.0.2.1:0", t.TempDir()) // TEST-NET-1, never local
	if err == nil {
		e.Shutdown()
		t.Fatal("started listening on 192.0.2.1")
	}
	if !strings.Contains(err.Error(), "did not start") || !strings.Contains(err.Error(), "192.0.2.1") ||
		!strings.Contains(err.Error(), "cannot assign requested address") {
		t.Fatalf("error %q: want the server's own", err)
	}
}

// TestStartEmbedded: a usable --data-dir, created if missing, starts.
func TestStartEmbedded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "data")
	e, err := StartEmbedded("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if fi, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil || !fi.IsDir() {
		t.Fatalf("no store under %s: %v", dir, err)
	}
	if !e.Server().JetStreamEnabled() {
		t.Fatal("JetStream is not enabled")
	}
}
