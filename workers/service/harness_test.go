package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

func newMasterKey(t testing.TB) string {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// worker is a started Service with its captured logs.
type worker struct {
	*Service
	logs *testenv.Buffer
}

// startWorker starts a worker from cfg (debug logging captured) and stops it
// when the test ends.
func startWorker(t testing.TB, cfg config.Serve, opts ...Option) *worker {
	t.Helper()
	logs := &testenv.Buffer{}
	return startWorkerLog(t, cfg, zerolog.New(logs).Level(zerolog.DebugLevel), logs, opts...)
}

// startWorkerLog starts a worker from cfg logging to log (captured in logs,
// when not nil) and stops it when the test ends.
func startWorkerLog(t testing.TB, cfg config.Serve, log zerolog.Logger, logs *testenv.Buffer, opts ...Option) *worker {
	t.Helper()
	s, err := Start(context.Background(), cfg, log, opts...)
	if err != nil {
		t.Fatalf("starting worker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return &worker{Service: s, logs: logs}
}

// joinedConfig is a worker configuration joining the NATS server at url.
func joinedConfig(url, key string) config.Serve {
	cfg := config.Defaults()
	cfg.URL = url
	cfg.MasterKey = key
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RequestTimeout = 2 * time.Second
	cfg.AllowEndpoints = testAllowEndpoints()
	return cfg
}

// embeddedConfig is a worker configuration with its own embedded NATS server.
func embeddedConfig(dataDir string) config.Serve {
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RequestTimeout = 2 * time.Second
	cfg.AllowEndpoints = testAllowEndpoints()
	return cfg
}

// testAllowEndpoints is the default endpoint allowlist plus the loopback
// hosts the fakes listen on.
func testAllowEndpoints() []string {
	return append(append([]string(nil), provider.DefaultAllowEndpoints...), "127.0.0.1", "localhost", "[::1]")
}

func connect(t testing.TB, url string) (*nats.Conn, *events.Client) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, events.NewClient(nc, "")
}

func adminReq(t testing.TB, c *events.Client, resource, verb string, req, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Request(ctx, c.Subjects().Admin(resource, verb), req, out); err != nil {
		t.Fatalf("admin %s.%s: %v", resource, verb, err)
	}
}

func resolveReq(c *events.Client, group, conn string, req events.ResolveRequest) (*events.ResolveReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Resolve(ctx, group, conn, req)
}

var localBio = events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin, Groups: []string{"bio"}, Secrets: []string{"biodb*"}}

// walkthrough is the README's story: a builtin connection and its secret.
func walkthrough(t testing.TB, c *events.Client) {
	t.Helper()
	adminReq(t, c, events.ResourceConnections, events.VerbPut, localBio, nil)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: []byte(`{"login":"user01","password":"password01"}`)}, nil)
}

// fakeCloud is a provider whose behaviour is chosen by the secret's name.
type fakeCloud struct {
	calls atomic.Int64
	mu    sync.Mutex
	down  bool
	gate  chan struct{}
}

func (f *fakeCloud) factory(_ context.Context, c events.Connection) (provider.Resolver, error) {
	return provider.ResolverFunc(f.resolve), nil
}

func (f *fakeCloud) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeCloud) resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	f.calls.Add(1)
	f.mu.Lock()
	down, gate := f.down, f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if down {
		return provider.Secret{}, fmt.Errorf("calling the cloud: %w", events.ErrUnavailable)
	}
	switch req.Secret {
	case "unauthorized":
		return provider.Secret{}, fmt.Errorf("credentials rejected: %w", events.ErrUnauthorized)
	case "denied":
		return provider.Secret{}, fmt.Errorf("access denied: %w", events.ErrForbidden)
	case "missing":
		return provider.Secret{}, fmt.Errorf("secret %q: %w", req.Secret, events.ErrNotFound)
	case "throttled":
		return provider.Secret{}, fmt.Errorf("rate exceeded: %w", events.ErrThrottled)
	case "down":
		return provider.Secret{}, fmt.Errorf("calling the cloud: %w", events.ErrUnavailable)
	case "slow":
		<-ctx.Done()
		return provider.Secret{}, ctx.Err()
	case "panic":
		panic("provider bug with password01 in it")
	case "bug":
		return provider.Secret{}, errors.New("unexpected nil map")
	case "text":
		return provider.Secret{Version: "v1", Data: []byte("plain-password")}, nil
	case "binary":
		return provider.Secret{Version: "v1", Data: []byte{0xff, 0x00, 0x01}, Binary: true}, nil
	}
	return provider.Secret{Version: "v1", Data: []byte(`{"login":"user01","password":"password01","port":5432}`)}, nil
}
