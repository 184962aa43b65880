package gcp

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/gcpfake"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
)

const project = "bio-prod"

// TestMain makes sure no test can reach Google: ADC points at a missing file
// (so the metadata server is never tried) and the metadata host is a closed
// loopback port.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gcp-test")
	if err != nil {
		panic(err)
	}
	os.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(dir, "missing.json"))
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a fake plus its accounts.
type env struct {
	fake   *gcpfake.Server
	reader *gcpfake.ServiceAccount // reader@bio-prod
	writer *gcpfake.ServiceAccount // writer@bio-prod
	worker *gcpfake.ServiceAccount // worker@ops-prod: the worker's ADC identity
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := gcpfake.New(t)
	e := &env{
		fake:   f,
		reader: f.AddServiceAccount("reader@bio-prod.iam.gserviceaccount.com"),
		writer: f.AddServiceAccount("writer@bio-prod.iam.gserviceaccount.com"),
		worker: f.AddServiceAccount("worker@ops-prod.iam.gserviceaccount.com"),
	}
	f.MustAddVersion(project, "biodb01", []byte(`{"login":"user01","password":"password01"}`))
	return e
}

// useADC points Application Default Credentials at the worker's key file.
func (e *env) useADC(t *testing.T) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "adc.json")
	if err := os.WriteFile(path, e.worker.KeyJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
}

func (e *env) keyConn(name string, sa *gcpfake.ServiceAccount) events.Connection {
	return events.Connection{Name: name, Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: project, Auth: events.GCPAuthServiceAccountKey,
			ServiceAccountKey: sa.KeyJSON(), Endpoint: e.fake.Endpoint()}}
}

func (e *env) impersonationConn(name, target string, caller *gcpfake.ServiceAccount, delegates ...string) events.Connection {
	c := events.Connection{Name: name, Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Auth: events.GCPAuthImpersonation, Impersonate: target, Delegates: delegates,
			Endpoint: e.fake.Endpoint()}}
	if caller != nil {
		c.GCP.ServiceAccountKey = caller.KeyJSON()
	}
	return c
}

func (e *env) defaultConn(name string) events.Connection {
	return events.Connection{Name: name, Provider: events.ProviderGCP, Groups: []string{"bio"}, Secrets: []string{"*"},
		GCP: &events.GCPConfig{Project: project, Auth: events.GCPAuthDefault, Endpoint: e.fake.Endpoint()}}
}

// fastRetry keeps throttling tests in milliseconds.
var fastRetry = WithRetry(4, time.Millisecond, 5*time.Millisecond)

func newProvider(t *testing.T, conn events.Connection, opts ...Option) *Provider {
	t.Helper()
	p, err := New(context.Background(), conn, append([]Option{fastRetry}, opts...)...)
	if err != nil {
		t.Fatalf("New(%s): %v", conn.Name, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err carries the wire code.
func wantCode(t *testing.T, err error, code events.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var we *events.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %q carries no wire code, want %s", err, code)
	}
	if we.Code != code {
		t.Fatalf("code %s (%q), want %s", we.Code, err, code)
	}
}

func debugLogger(buf *testenv.Buffer) zerolog.Logger {
	return zerolog.New(buf).Level(zerolog.DebugLevel)
}

// noLeak fails if s contains a private key or a secret payload.
func noLeak(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, bad := range append([]string{"PRIVATE KEY", "password01"}, secrets...) {
		if bad != "" && strings.Contains(s, bad) {
			t.Fatalf("%s leaks %q: %s", what, bad, s)
		}
	}
}
