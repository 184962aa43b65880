package bus

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream storing under dataDir and
// listening on listen (host:port). A busy address is an error naming --listen.
func StartEmbedded(listen, dataDir string) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want host:port", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("--listen %q: invalid port", listen)
	}
	if port != 0 {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: cannot listen (%w); is another NATS server running there? Pass a free --listen address, or --nats-url to join that server", listen, unwrapOp(err))
		}
		_ = ln.Close()
	} else {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "cloudbridge-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats-server on %s did not become ready (check --listen and --data-dir)", listen)
	}
	return &Embedded{srv: srv}, nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// ClientURL is the URL other processes connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server is the underlying server, for in-process connections.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
