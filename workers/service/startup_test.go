package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestStartWaitsForJetStream: a worker started before its server's
// JetStream is ready keeps retrying (logging each failure) and comes up once
// it is, instead of exiting.
func TestStartWaitsForJetStream(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	logs := &testenv.Buffer{}
	type started struct {
		s   *Service
		err error
	}
	done := make(chan started, 1)
	go func() {
		s, err := Start(context.Background(), joinedConfig(srv.ClientURL(), newMasterKey(t)), zerolog.New(logs))
		done <- started{s, err}
	}()
	// The worker fails, logs and retries while JetStream is off.
	natstest.Eventually(t, 20*time.Second, "a logged bind failure", func() bool {
		return strings.Contains(logs.String(), "retrying")
	})
	select {
	case r := <-done:
		t.Fatalf("Start returned while JetStream was off: %v", r.err)
	default:
	}
	if err := srv.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var r started
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the worker did not come up after JetStream was enabled")
	}
	if r.err != nil {
		t.Fatalf("Start: %v", r.err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.s.Stop(ctx)
	})
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
}

// TestStartGivesUpWhenStopped: start-up retries end when its context is
// cancelled.
func TestStartGivesUpWhenStopped(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.Buffer{}
	done := make(chan error, 1)
	go func() {
		_, err := Start(ctx, joinedConfig(srv.ClientURL(), newMasterKey(t)), zerolog.New(logs))
		done <- err
	}()
	natstest.Eventually(t, 20*time.Second, "a logged bind failure", func() bool {
		return strings.Contains(logs.String(), "retrying")
	})
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Start succeeded without JetStream")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start kept retrying after its context was cancelled")
	}
}
