package aws

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/fake/awsfake"
)

// isolate keeps the SDK away from the real machine: no shared config files,
// no AWS_* credentials from the environment, no instance metadata at
// 169.254.169.254 and no container endpoint, unless a test sets them.
func isolate(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("HOME", dir)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
		EnvContainerFullURI, EnvContainerRelativeURI, EnvContainerToken, EnvContainerTokenFile} {
		t.Setenv(k, "")
	}
}

// useIMDS points the SDK's instance metadata client at the fake.
func useIMDS(t *testing.T, fake *awsfake.Server) {
	t.Helper()
	t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.URL())
}

func accessKeyConn(fake *awsfake.Server, c awsfake.Credentials) events.Connection {
	return events.Connection{
		Name: "aws-sm-bio", Provider: events.ProviderAWS, Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey,
			AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
			Endpoint: fake.URL()},
	}
}

func authConn(fake *awsfake.Server, auth string) events.Connection {
	return events.Connection{
		Name: "aws-task", Provider: events.ProviderAWS, Groups: []string{"*"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: auth, Endpoint: fake.URL()},
	}
}

// fastRetry keeps retry backoff tiny so throttling tests take milliseconds.
var fastRetry = WithRetry(4, 2*time.Millisecond)

func newProvider(t *testing.T, conn events.Connection, opts ...Option) *Provider {
	t.Helper()
	p, err := New(context.Background(), conn, append([]Option{fastRetry}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// assertSafe fails when an error message leaks a secret.
func assertSafe(t *testing.T, err error, secrets ...string) {
	t.Helper()
	msg := events.AsWire(err).Message
	for _, s := range append(secrets, "RequestID", "request id", "RequestId") {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error message %q leaks %q", msg, s)
		}
	}
}
