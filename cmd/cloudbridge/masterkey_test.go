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
