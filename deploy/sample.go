package deploy

import (
	_ "embed"
	"errors"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// SampleConfig is the text of the sample nats-server.conf.
//
//go:embed nats-server.conf
var SampleConfig []byte

// SampleUsers maps each user of the sample configuration to its (public,
// sample) password.
var SampleUsers = map[string]string{
	"admin":   "admin-password",
	"worker":  "worker-password",
	"logs":    "logs-password",
	"auditor": "auditor-password",
	"bio":     "bio-password",
	"chem":    "chem-password",
}

// StartSampleServer starts an in-process nats-server from the sample
// configuration, on a random loopback port, JetStream in t.TempDir(),
// monitoring off, shut down when the test ends.
func StartSampleServer(t testenv.TB) *server.Server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(path, SampleConfig, 0o600); err != nil {
		t.Fatalf("writing sample config: %v", err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("loading sample nats-server.conf: %v", err)
	}
	// The file's hashes cost 10, slow to check under the race detector: the
	// server gets hashes of the same sample passwords at bcrypt's lowest
	// cost (still bcrypt; TestSampleConfigIsHardened checks the file's).
	for _, u := range opts.Users {
		if clear, ok := SampleUsers[u.Username]; ok {
			h, err := bcrypt.GenerateFromPassword([]byte(clear), bcrypt.MinCost)
			if err != nil {
				t.Fatalf("hashing the sample password of %s: %v", u.Username, err)
			}
			u.Password = string(h)
		}
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPPort = 0
	opts.StoreDir = filepath.Join(dir, "jetstream")
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("starting nats-server from the sample config: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("nats-server from the sample config not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Client is a connection as one sample user, recording the asynchronous
// errors the server sends it (permissions violations among them).
type Client struct {
	*nats.Conn
	mu   sync.Mutex
	errs []error
}

// ConnectAs connects to s as user with its sample password, closed when the
// test ends. opts are applied after the credentials.
func ConnectAs(t testenv.TB, s *server.Server, user string, opts ...nats.Option) *Client {
	t.Helper()
	pw, ok := SampleUsers[user]
	if !ok {
		t.Fatalf("no sample user %q", user)
	}
	c := &Client{}
	all := append([]nats.Option{
		nats.UserInfo(user, pw),
		nats.Name("deploy-test-" + user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		}),
	}, opts...)
	nc, err := nats.Connect(s.ClientURL(), all...)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

// Errors returns the asynchronous errors received so far.
func (c *Client) Errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// WaitPermissionViolation waits up to within for the server to report a
// permissions violation on subject, and returns it.
func (c *Client) WaitPermissionViolation(subject string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		for _, err := range c.Errors() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return err
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}
