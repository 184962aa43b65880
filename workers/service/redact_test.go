package service

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestWorkerLogsNoNATSPassword: a worker given its NATS credentials in the
// URL logs the URL without them, as an attacker reading its logs would look.
func TestWorkerLogsNoNATSPassword(t *testing.T) {
	const password = "sekretPassw0rd"
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), Username: "user", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	addr := srv.Addr().String()
	logs := &testenv.Buffer{}
	s, err := Start(context.Background(), joinedConfig("nats://user:"+password+"@"+addr, newMasterKey(t)), zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "cloudbridge worker started") || !strings.Contains(out, `"nats":"nats://`+addr+`"`) {
		t.Fatalf("no started line with the redacted URL in the logs:\n%s", out)
	}
	if strings.Contains(out, password) {
		t.Fatalf("the NATS password is in the worker's logs:\n%s", out)
	}
}

// TestWorkerConnectErrorNoNATSSecret: a worker that cannot reach its NATS
// puts neither the password nor the token of the URL in its logs or its
// error.
func TestWorkerConnectErrorNoNATSSecret(t *testing.T) {
	for _, tc := range []struct{ name, url, secret string }{
		{"password", "nats://user:sekretPassw0rd@127.0.0.1:1", "sekretPassw0rd"},
		{"token", "nats://s3kretT0ken@127.0.0.1:1", "s3kretT0ken"},
		{"list", "nats://127.0.0.1:1,nats://user:sekretPassw0rd@127.0.0.1:2", "sekretPassw0rd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logs := &testenv.Buffer{}
			done := make(chan error, 1)
			go func() {
				_, err := Start(ctx, joinedConfig(tc.url, newMasterKey(t)), zerolog.New(logs))
				done <- err
			}()
			natstest.Eventually(t, 20*time.Second, "a logged connect failure", func() bool {
				return strings.Contains(logs.String(), "retrying")
			})
			cancel()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Start kept retrying after its context was cancelled")
			}
			if err == nil {
				t.Fatal("Start succeeded without a NATS server")
			}
			msg := fmt.Sprint(err)
			if !strings.Contains(msg, "connecting to NATS at") || !strings.Contains(msg, "127.0.0.1:1") {
				t.Fatalf("error %q does not say which NATS", msg)
			}
			if strings.Contains(msg, tc.secret) || strings.Contains(logs.String(), tc.secret) {
				t.Fatalf("the NATS secret is in the error %q or the logs:\n%s", msg, logs.String())
			}
		})
	}
}
