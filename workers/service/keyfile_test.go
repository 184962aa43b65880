package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// A master key file readable by group or others is a startup error naming
// the fix.
func TestLooseMasterKeyFileRefusedAtStart(t *testing.T) {
	srv := natstest.Server(t)
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte(newMasterKey(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := joinedConfig(srv.ClientURL(), "")
	cfg.MasterKeyFile = path
	s, err := Start(context.Background(), cfg, zerolog.Nop())
	if err == nil {
		_ = s.Stop(context.Background())
		t.Fatal("started with a master key file of mode 0644")
	}
	if !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("error %q does not name the fix", err)
	}
}
