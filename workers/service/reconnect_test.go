package service

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// The worker survives a NATS restart: it logs the disconnect, reconnects by
// itself, and serves again from the same JetStream state.
func TestReconnectsAfterNATSRestart(t *testing.T) {
	// Below the ephemeral range: while the server is down, no outgoing
	// connection can take its port.
	port := testenv.MustFreePort(t)
	store := t.TempDir()
	srv := natstest.ServerWith(t, &server.Options{Port: port, StoreDir: store})
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := events.NewClient(nc, "")
	walkthrough(t, c)

	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.Eventually(t, 5*time.Second, "the disconnect to be logged", func() bool {
		return strings.Contains(w.logs.String(), "nats disconnected")
	})
	restarted := time.Now()
	natstest.ServerWith(t, &server.Options{Port: port, StoreDir: store})
	t.Logf("server restart took %s", time.Since(restarted))
	natstest.Eventually(t, 30*time.Second, "the worker to reconnect and serve", func() bool {
		got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01", Fresh: true})
		if err != nil {
			return false
		}
		p, _ := got.String("password")
		return p == "password01"
	})
	t.Logf("serving again %s after the restart began", time.Since(restarted))
	if !strings.Contains(w.logs.String(), "nats reconnected") {
		t.Fatal("the reconnect was not logged")
	}
}
