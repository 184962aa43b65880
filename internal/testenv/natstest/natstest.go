// Package natstest starts in-process nats-servers with JetStream for tests.
package natstest

import (
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server starts a nats-server with JetStream on a random loopback port, its
// store in a fresh t.TempDir(), shut down when the test ends.
func Server(t testenv.TB) *server.Server {
	t.Helper()
	return ServerWith(t, &server.Options{})
}

// ServerWith starts a server from opts, filling in a random port, JetStream in
// t.TempDir() (unless opts.StoreDir is set) and no logging.
func ServerWith(t testenv.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.JetStream = true
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s, closed when the test ends.
func Connect(t testenv.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connecting to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Eventually is testenv.Eventually (here too, for the tests that start a
// server).
func Eventually(t testenv.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, within, what, cond)
}
