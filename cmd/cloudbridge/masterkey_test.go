package main

import (
	"strings"
	"testing"
)

// TestServeBadMasterKeyNamesFlag: a --master-key that is not base64 of 32
// bytes is refused naming the flag as well as its env twin (it named only
// CLOUDBRIDGE_MASTER_KEY, though the flag was given).
func TestServeBadMasterKeyNamesFlag(t *testing.T) {
	clearNATSEnv(t)
	_, errOut, code := cb(t, "", "serve", "--master-key", "short", "--listen", "127.0.0.1:0", "--http-addr", "off", "--data-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "--master-key (CLOUDBRIDGE_MASTER_KEY)") || !strings.Contains(errOut, "base64 of 32 bytes") || strings.Contains(errOut, "short") {
		t.Fatalf("serve --master-key short: exit %d, stderr %q", code, errOut)
	}
}

// TestServeUnusableDataDir: serve with a --data-dir it cannot store under
// exits at once with the usage code and the OS error naming the directory
// (it waited 15 s for the embedded server and said only "did not become
// ready").
func TestServeUnusableDataDir(t *testing.T) {
	clearNATSEnv(t)
	_, errOut, code := cb(t, "", "serve", "--listen", "127.0.0.1:0", "--http-addr", "off", "--data-dir", "/proc/cloudbridge-nosuch")
	if code != 2 || !strings.Contains(errOut, "--data-dir /proc/cloudbridge-nosuch: mkdir /proc/cloudbridge-nosuch") {
		t.Fatalf("serve --data-dir /proc/cloudbridge-nosuch: exit %d, stderr %q", code, errOut)
	}
}
