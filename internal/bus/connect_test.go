package bus

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// TestConnectWaitsForTheServer: with nothing listening yet, Connect retries
// (logging the failures) until a server comes up on the port.
func TestConnectWaitsForTheServer(t *testing.T) {
	port := testenv.MustFreePort(t)
	var logs syncBuf
	log := zerolog.New(&logs)
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := Connect(context.Background(), log, "nats://127.0.0.1:"+itoa(port), nats.Timeout(time.Second))
		done <- result{nc, err}
	}()
	natstest.Eventually(t, 30*time.Second, "a failed attempt logged", func() bool {
		return strings.Contains(logs.String(), "connecting to NATS: failed, retrying")
	})
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Connect: %v", r.err)
		}
		r.nc.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("Connect did not connect once the server was up")
	}
}

// TestConnectStopsWhenCancelled: a Connect still waiting for its server ends
// at once when its context is done.
func TestConnectStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Connect(ctx, zerolog.Nop(), "nats://127.0.0.1:"+itoa(testenv.MustFreePort(t)), nats.Timeout(time.Second))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "gave up when stopped") {
			t.Fatalf("Connect after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Connect kept trying after its context was cancelled")
	}
}

// TestConnectGivesUpOnRefusedCredentials: a server that refuses the
// credentials is a permanent error, returned at once.
func TestConnectGivesUpOnRefusedCredentials(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Username: "u", Password: "right"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Connect(ctx, zerolog.Nop(), srv.ClientURL(), nats.UserInfo("u", "wrong"))
	if err == nil || strings.Contains(err.Error(), "gave up when stopped") {
		t.Fatalf("Connect with refused credentials: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
