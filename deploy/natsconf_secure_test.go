package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/cloudbridge/cloudbridge/deploy"
)

// TestSampleConfigIsHardened: the sample nats-server.conf stores no clear
// password (each is a bcrypt hash of the documented sample password) and its
// unauthenticated monitoring port listens on loopback only.
func TestSampleConfigIsHardened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, deploy.SampleConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.HTTPHost != "127.0.0.1" || opts.HTTPPort != 8222 {
		t.Errorf("monitoring listens on %s:%d, want 127.0.0.1:8222", opts.HTTPHost, opts.HTTPPort)
	}
	seen := map[string]bool{}
	for _, u := range opts.Users {
		seen[u.Username] = true
		if !strings.HasPrefix(u.Password, "$2") {
			t.Errorf("user %s: password stored in clear", u.Username)
			continue
		}
		clear, ok := deploy.SampleUsers[u.Username]
		if !ok {
			t.Errorf("user %s is not in deploy.SampleUsers", u.Username)
			continue
		}
		if err := bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(clear)); err != nil {
			t.Errorf("user %s: the hash is not of the sample password: %v", u.Username, err)
		}
		if cost, _ := bcrypt.Cost([]byte(u.Password)); cost < 10 {
			t.Errorf("user %s: bcrypt cost %d, want at least 10", u.Username, cost)
		}
	}
	for u := range deploy.SampleUsers {
		if !seen[u] {
			t.Errorf("sample user %s not in the config", u)
		}
	}
	if strings.Contains(string(deploy.SampleConfig), `-password"`) {
		t.Error("a clear sample password is in the config")
	}
}
