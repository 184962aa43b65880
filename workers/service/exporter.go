package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	awsprov "github.com/cloudbridge/cloudbridge/internal/provider/aws"
	"github.com/cloudbridge/cloudbridge/internal/provider/gcp"
	"github.com/cloudbridge/cloudbridge/workers/export"
	"github.com/cloudbridge/cloudbridge/workers/resolve"
)

// reconciler applies the registry's export blocks to the export worker on its
// own goroutine: Apply waits for changed blocks to flush, and the registry's
// watchers must never wait for that. Changes that arrive meanwhile coalesce
// into one more Apply.
type reconciler struct {
	w       *export.Worker
	gcp     *gcpCredentials
	state   func() ([]events.Export, map[string]events.Connection)
	kick    chan struct{}
	stopped chan struct{}
	cancel  context.CancelFunc
}

func newExporter(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, subjects events.Subjects, cfg config.Serve,
	log zerolog.Logger, state func() ([]events.Export, map[string]events.Connection)) (*reconciler, error) {
	allow, err := cfg.Allowlist()
	if err != nil {
		return nil, err
	}
	endpoints := all.Table.WithEndpoints(allow)
	gcpCreds := &gcpCredentials{log: log, by: map[string]gcpEntry{}, endpoints: endpoints}
	stream := cfg.LogsStream
	if stream == "" {
		stream = subjects.LogsStream()
	}
	w, err := export.New(export.Config{
		NC: nc, JS: js, Subjects: subjects,
		LogsStream: stream, LogsSubjects: cfg.LogsSubjects, BindStream: cfg.LogsStream != "",
		DeadStream: subjects.DeadStream(), AuditStream: subjects.AuditStream(),
		Replicas: cfg.KVReplicas, StatusReplicas: cfg.KVReplicas,
		MaxAge: cfg.LogsMaxAge, MaxBytes: cfg.LogsMaxBytes,
		Sinks:  export.NewSinkFactory(sinkAWSConfig(log, endpoints), gcpCreds.options),
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring log export: %w", err)
	}
	if err := bus.Retry(ctx, log, "creating the log streams", w.Start); err != nil {
		return nil, fmt.Errorf("starting log export: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &reconciler{w: w, gcp: gcpCreds, state: state, kick: make(chan struct{}, 1), stopped: make(chan struct{}), cancel: cancel}
	go r.loop(rctx)
	return r, nil
}

// Changed asks for the export blocks to be applied again.
func (r *reconciler) Changed() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *reconciler) loop(ctx context.Context) {
	defer close(r.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			exports, conns := r.state()
			r.w.Apply(exports, conns)
		}
	}
}

// Stop stops applying changes, then stops the export worker, which flushes
// and acks its batches. The worker gets the deadline minus a reserve (a fifth
// of what is left, at most 2s), so what it could not deliver is nak'ed and
// flushed, and the rest of the shutdown (drain) still fits in ctx: SIGTERM
// ends within --shutdown-timeout whatever the sinks do. Giving back
// undelivered batches at the deadline is the designed end, not an error.
func (r *reconciler) Stop(ctx context.Context) error {
	r.cancel()
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		reserve := min(time.Until(dl)/5, 2*time.Second)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-reserve))
		defer cancel()
	}
	// Stopping the worker also ends an Apply waiting for changed blocks.
	err := r.w.Stop(wctx)
	select {
	case <-r.stopped:
	case <-ctx.Done():
	}
	r.gcp.Close()
	return err
}

// Register adds the export health endpoint (admin.exports.status), answered
// from this worker's view: the consumers' info, the dead-letter stream and
// every worker's status records.
func (r *reconciler) Register(svc *srv.Service, subjects events.Subjects, run *endpoint.Runner) error {
	const name = "admin-exports-status"
	return svc.AddEndpoint(name, run.Handler(name, func(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
		var q events.ExportStatusRequest
		if err := events.Decode(req.Data(), &q); err != nil {
			return nil, err
		}
		if err := q.Validate(); err != nil {
			return nil, err
		}
		f.Export = q.Name
		return r.w.Status(ctx, q.Name)
	}), srv.WithSubject(subjects.AdminExportsStatus()))
}

// sinkAWSConfig gives a CloudWatch sink the SDK config of its connection,
// with the connection's own credentials.
func sinkAWSConfig(log zerolog.Logger, endpoints resolve.EndpointChecker) func(context.Context, events.Connection) (awssdk.Config, error) {
	return func(ctx context.Context, c events.Connection) (awssdk.Config, error) {
		if err := endpoints.CheckStored(&c); err != nil {
			return awssdk.Config{}, err
		}
		return awsprov.SDKConfig(ctx, c, awsprov.WithLogger(log))
	}
}

// gcpCredentials keeps one GCP provider per connection for the Cloud Logging
// sinks, so every sink of a connection shares its token cache, and a changed
// connection gets a new one; Close releases them all.
type gcpCredentials struct {
	log       zerolog.Logger
	endpoints resolve.EndpointChecker
	mu        sync.Mutex
	by        map[string]gcpEntry
}

type gcpEntry struct {
	fingerprint string
	p           *gcp.Provider
}

// options gives a Cloud Logging sink the client options of its connection:
// endpoint and the connection's own token source.
func (g *gcpCredentials) options(ctx context.Context, c events.Connection) ([]option.ClientOption, error) {
	if err := g.endpoints.CheckStored(&c); err != nil {
		return nil, err
	}
	fp, err := json.Marshal(c.GCP)
	if err != nil {
		return nil, fmt.Errorf("fingerprinting connection %s: %w", c.Name, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.by[c.Name]; ok {
		if e.fingerprint == string(fp) {
			return e.p.ClientOptions(), nil
		}
		_ = e.p.Close()
		delete(g.by, c.Name)
	}
	p, err := gcp.New(ctx, c, gcp.WithLogger(g.log))
	if err != nil {
		return nil, err
	}
	g.by[c.Name] = gcpEntry{fingerprint: string(fp), p: p}
	return p.ClientOptions(), nil
}

// Close releases every provider.
func (g *gcpCredentials) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, e := range g.by {
		_ = e.p.Close()
		delete(g.by, name)
	}
}
