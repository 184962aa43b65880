package bus

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv *server.Server
}

// embeddedReady bounds how long the embedded server has to accept
// connections once started.
const embeddedReady = 15 * time.Second

// DataDirError is a --data-dir the embedded server cannot store under (it
// cannot be created, is not a directory, cannot be written): a mistake in the
// configuration, found before the server starts. Err is the OS error, which
// names the path it failed on.
type DataDirError struct {
	Dir string
	Err error
}

func (e *DataDirError) Error() string {
	return fmt.Sprintf("--data-dir %s: %v (pass a directory cloudbridge can create and write)", e.Dir, e.Err)
}

func (e *DataDirError) Unwrap() error { return e.Err }

// CheckDataDir creates the embedded server's JetStream store under dataDir
// (and dataDir itself) and checks it can write there; a *DataDirError if not.
func CheckDataDir(dataDir string) error {
	store := filepath.Join(dataDir, "jetstream")
	if err := os.MkdirAll(store, 0o750); err != nil {
		return &DataDirError{Dir: dataDir, Err: err}
	}
	f, err := os.CreateTemp(store, ".write-check-*")
	if err != nil {
		return &DataDirError{Dir: dataDir, Err: err}
	}
	name := f.Name()
	_ = f.Close()
	if err := os.Remove(name); err != nil {
		return &DataDirError{Dir: dataDir, Err: err}
	}
	return nil
}

// StartEmbedded starts a nats-server with JetStream storing under dataDir and
// listening on listen (host:port). A busy address is an error naming --listen,
// an unusable dataDir a *DataDirError, both before the server starts; if the
// server fails to start for another reason, the error is the server's own.
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
	if err := CheckDataDir(dataDir); err != nil {
		return nil, err
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
	// The server reports why it did not start only in its log (NoLog: no
	// log of its own): record it while starting.
	rec := &startLog{fatal: make(chan string, 1)}
	srv.SetLogger(rec, false, false)
	go srv.Start()
	deadline := time.Now().Add(embeddedReady)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-rec.fatal:
			srv.Shutdown()
			return nil, fmt.Errorf("embedded nats-server on %s did not start: %s (check --listen and --data-dir)", listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			why := ""
			if last := rec.last(); last != "" {
				why = ": " + last
			}
			return nil, fmt.Errorf("embedded nats-server on %s did not become ready in %s%s (check --listen and --data-dir)", listen, embeddedReady, why)
		}
	}
	srv.SetLogger(nil, false, false)
	return &Embedded{srv: srv}, nil
}

// startLog records the embedded server's fatal error and its last error
// while it starts; the rest of its log is dropped, as with NoLog.
type startLog struct {
	fatal   chan string
	mu      sync.Mutex
	lastErr string
}

func (l *startLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.setLast(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}

func (l *startLog) Errorf(format string, v ...any) { l.setLast(fmt.Sprintf(format, v...)) }

func (l *startLog) setLast(msg string) {
	l.mu.Lock()
	l.lastErr = msg
	l.mu.Unlock()
}

func (l *startLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (*startLog) Noticef(string, ...any) {}
func (*startLog) Warnf(string, ...any)   {}
func (*startLog) Debugf(string, ...any)  {}
func (*startLog) Tracef(string, ...any)  {}

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
