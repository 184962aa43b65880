// Package service assembles a cloudbridge worker: NATS (joined, or embedded),
// the sealed registry, the cache, the resolve, admin and export workers under
// one micro service, and the monitoring endpoint; with a start and a stop that
// drains.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/audit"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/monitor"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/internal/registry"
	"github.com/cloudbridge/cloudbridge/internal/seal"
	"github.com/cloudbridge/cloudbridge/internal/version"
	"github.com/cloudbridge/cloudbridge/workers/admin"
	"github.com/cloudbridge/cloudbridge/workers/resolve"
)

// Name of the micro service.
const Name = "cloudbridge"

// Version of the micro service ($SRV.INFO, PING, STATS): the build's
// version, the one `cloudbridge version` prints.
var Version = version.String()

// Service is a running worker.
type Service struct {
	cfg      config.Serve
	log      zerolog.Logger
	embedded *bus.Embedded
	nc       *nats.Conn
	reg      *registry.Registry
	cache    *cache.Store
	runner   *endpoint.Runner
	svcMu    sync.Mutex
	svc      *srv.Service // nil while not taking requests
	stopping bool
	admin    *admin.Worker
	dead     *admin.Dead
	resolver *resolve.Worker
	// stopHealth ends the health watch; healthDone is closed when it has.
	stopHealth context.CancelFunc
	healthDone chan struct{}
	exporter   *reconciler
	rotations  *rotations
	http       *monitor.Server
	factories  map[string]provider.Factory
	stopOnce   sync.Once
	stopErr    error

	auditor      *audit.Publisher
	fingerprints *audit.Fingerprinter
	instance     atomic.Pointer[string]
	noAudit      bool
	// auditNC publishes audit events: a connection of its own, so the
	// events never queue with the replies.
	auditNC *nats.Conn
}

// Option changes how a worker is assembled.
type Option func(*Service)

// WithProvider makes the worker build connections of provider name with f,
// in place of the built-in factory (tests, or a custom provider).
func WithProvider(name string, f provider.Factory) Option {
	return func(s *Service) { s.factories[name] = f }
}

// Start starts a worker. On error, everything started so far is stopped.
func Start(ctx context.Context, cfg config.Serve, log zerolog.Logger, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, factories: map[string]provider.Factory{}}
	for _, o := range opts {
		o(s)
	}
	if err := s.start(ctx); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

func (s *Service) start(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	if err := s.connect(ctx); err != nil {
		return err
	}
	sealer, err := s.sealer()
	if err != nil {
		return err
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	subjects := events.Subjects{Prefix: cfg.Prefix}
	allow, err := cfg.Allowlist()
	if err != nil {
		return err
	}
	table := all.Table.WithEndpoints(allow)
	s.reg, err = registry.Open(ctx, js, sealer, registry.Options{Prefix: cfg.Prefix, Replicas: cfg.KVReplicas, Logger: log,
		LogsSubjects: logsSubjects(cfg, subjects), AuditSubjects: []string{subjects.AuditWildcard()}, Providers: table})
	if err != nil {
		return err
	}
	s.cache = cache.New(cache.Options{MaxEntries: cfg.CacheMaxEntries})
	s.runner = endpoint.NewRunner(log, cfg.RequestTimeout, cfg.MaxInFlight)
	if err := s.startAudit(ctx, js, subjects, sealer); err != nil {
		return err
	}
	factories := providerFactories(log, s.reg, s.factories)
	// The rotation consumers concern providers with change events only:
	// the other records loaded at start stay sealed.
	s.rotations = newRotations(s.nc, subjects, factories, s.cache, log, func() []events.Connection {
		return s.reg.ConnectionsOf(hasEvents)
	})
	s.resolver = resolve.New(resolve.Config{Subjects: subjects, Connections: s.reg, Cache: s.cache,
		Factories: factories, Runner: s.runner, Logger: log, Endpoints: table, Fingerprint: s.fingerprints.Sum,
		Events: s.rotations})
	s.exporter, err = newExporter(ctx, s.nc, js, subjects, cfg, log, func() ([]events.Export, map[string]events.Connection) {
		exports := s.reg.Exports()
		return exports, s.connectionsOf(exports)
	})
	if err != nil {
		return err
	}
	s.reg.OnChange(s.onChange)
	if err := s.reg.Start(ctx); err != nil {
		return err
	}
	s.exporter.Changed()
	s.rotations.Changed()
	s.admin = admin.New(subjects, s.reg, s.resolver, s.runner).WithProviders(table)
	s.dead = admin.NewDead(subjects, js, subjects.DeadStream(), s.runner).WithExports(s.reg)
	// A worker takes requests only while healthy: its endpoints join the
	// queue groups once it is, and leave them when it is no longer.
	if why := s.health(); why != nil {
		log.Error().Str("why", why.Error()).Msg("worker not ready: not taking requests until it is")
	} else if err := s.addEndpoints(); err != nil {
		return err
	}
	if cfg.HTTPAddr != "off" {
		if s.http, err = monitor.Start(cfg.HTTPAddr, s.ready); err != nil {
			return err
		}
	}
	hctx, cancel := context.WithCancel(context.Background())
	s.stopHealth = cancel
	s.healthDone = make(chan struct{})
	go s.watchHealth(hctx)
	log.Info().Str("nats", bus.RedactURL(s.ClientURL())).Bool("embedded", s.embedded != nil).Str("http", s.HTTPAddr()).
		Str("instance", s.ServiceID()).Str("key_id", sealer.CurrentID()).Msg("cloudbridge worker started")
	return nil
}

// addEndpoints registers the service ($SRV discovery) and its endpoints, and waits
// until the server has their subscriptions: from then on, requests find this
// worker.
func (s *Service) addEndpoints() error {
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	if s.svc != nil || s.stopping {
		return nil
	}
	// The queue group is named after the service (micro's default is "q").
	// srv, not nats.go micro: its $SRV.STATS counts every reply as it is
	// sent, the asynchronous ones included.
	svc, err := srv.Add(s.nc, srv.Config{Name: Name, Version: Version, QueueGroup: Name,
		Description: "cloudbridge: credentials and log export for data platforms",
		Data:        endpoint.StatsData})
	if err != nil {
		return fmt.Errorf("registering the service: %w", err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = svc.Stop(ctx)
	}
	if err := s.resolver.Register(svc); err != nil {
		stop()
		return err
	}
	if err := s.admin.Register(svc); err != nil {
		stop()
		return err
	}
	if err := s.dead.Register(svc); err != nil {
		stop()
		return err
	}
	if err := s.exporter.Register(svc, events.Subjects{Prefix: s.cfg.Prefix}, s.runner); err != nil {
		stop()
		return err
	}
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		stop()
		return fmt.Errorf("registering endpoints with NATS: %w", err)
	}
	s.svc = svc
	id := svc.ID()
	s.instance.Store(&id)
	return nil
}

// removeEndpoints stops the service: its subscriptions drain (within ctx),
// so the queue groups stop sending this worker requests.
func (s *Service) removeEndpoints(ctx context.Context) error {
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	if s.svc == nil {
		return nil
	}
	err := s.svc.Stop(ctx)
	s.svc = nil
	// Once the server has the unsubscribes, it sends this worker no more
	// requests.
	if s.nc.IsConnected() {
		_ = s.nc.FlushTimeout(2 * time.Second)
	}
	return err
}

// health says why the worker cannot serve requests, or nil. NATS being
// disconnected is not among the reasons: its subscriptions come back with
// the connection.
func (s *Service) health() error {
	if s.reg == nil {
		return errors.New("registry buckets not ready")
	}
	return s.reg.Health()
}

// watchHealth takes the endpoints out while the worker is unhealthy, and
// puts them back once it is healthy again, logging each change with why.
func (s *Service) watchHealth(ctx context.Context) {
	defer close(s.healthDone)
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		why := s.health()
		switch {
		case why != nil:
			if why.Error() != last {
				s.log.Error().Str("why", why.Error()).Msg("worker not ready: leaving the queue groups")
				last = why.Error()
			}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.removeEndpoints(ctx)
			cancel()
			if err != nil {
				s.log.Warn().Err(err).Msg("removing endpoints")
			}
		default:
			if last != "" {
				s.log.Info().Msg("worker ready again: taking requests")
				last = ""
			}
			if err := s.addEndpoints(); err != nil {
				s.log.Warn().Err(err).Msg("adding endpoints")
			}
		}
	}
}

// healthEvery is how often the worker checks its health.
const healthEvery = 500 * time.Millisecond

func (s *Service) sealer() (*seal.Sealer, error) {
	var cur seal.Key
	var err error
	switch {
	case s.cfg.MasterKey != "":
		cur, err = seal.ParseKey(s.cfg.MasterKey)
		if err != nil {
			err = fmt.Errorf("--master-key (CLOUDBRIDGE_MASTER_KEY): %w", err)
		}
	case s.cfg.MasterKeyFile != "":
		cur, err = seal.LoadKeyFile(s.cfg.MasterKeyFile)
	default:
		path := filepath.Join(s.cfg.DataDir, "master.key")
		cur, err = seal.LoadKeyFile(path)
		if errors.Is(err, os.ErrNotExist) {
			cur, err = seal.GenerateKeyFile(path)
			if err == nil {
				s.log.Warn().Str("path", path).Msg("no master key configured: generated one for the embedded dev mode; back it up, and use --master-key-file in production")
			}
		}
	}
	if err != nil {
		return nil, err
	}
	var prev []seal.Key
	if s.cfg.PreviousMasterKeyFile != "" {
		k, err := seal.LoadKeyFile(s.cfg.PreviousMasterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--previous-master-key-file: %w", err)
		}
		prev = append(prev, k)
	}
	return seal.New(cur, prev...), nil
}

// connect opens the worker's NATS connection. A server that is not there
// yet is waited for, with backoff and the failures logged, until it is or
// ctx is done.
func (s *Service) connect(ctx context.Context) error {
	if s.cfg.Embedded() {
		e, err := bus.StartEmbedded(s.cfg.Listen, s.cfg.DataDir)
		if err != nil {
			return err
		}
		s.embedded = e
	}
	nc, err := s.dial(ctx, "cloudbridge-worker")
	if err != nil {
		return err
	}
	s.nc = nc
	return nil
}

// dial opens a connection named name to the worker's NATS (the embedded
// server in process). A server that is not there yet is waited for, with
// backoff and the failures logged, until it is or ctx is done.
func (s *Service) dial(ctx context.Context, name string) (*nats.Conn, error) {
	url := s.cfg.URL
	var extra []nats.Option
	if s.embedded != nil {
		url = s.embedded.ClientURL()
		extra = append(extra, nats.InProcessServer(s.embedded.Server()))
	} else {
		auth, err := s.cfg.Auth().Options()
		if err != nil {
			return nil, err
		}
		// The first connection is retried here, with its failures logged;
		// once connected, nats.go reconnects forever.
		extra = append(append(extra, auth...), nats.RetryOnFailedConnect(false))
	}
	nc, err := bus.Connect(ctx, s.log, url, append(bus.Resilient(name, s.log), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", bus.RedactURL(url), err)
	}
	return nc, nil
}

func (s *Service) onChange(c registry.Change) {
	if c.Initial {
		// The state Start loads: nothing is built or cached yet, and the
		// exports and rotation consumers are brought in line with the whole
		// state once Start returns.
		return
	}
	switch c.Kind {
	case registry.KindConnection:
		s.resolver.ConnectionChanged(c.Name)
		s.exporter.Changed()
		if conn, ok := s.reg.Connection(c.Name); s.rotations.Concerns(c.Name, conn, ok) {
			s.rotations.Changed()
		}
	case registry.KindSecret:
		if c.Conn == "" {
			// The secrets bucket was created again: every builtin
			// connection's cached secrets are outdated (a connection no
			// longer in the view has nothing to keep either).
			s.resolver.SecretsChanged(func(conn string) bool {
				cc, ok := s.reg.Connection(conn)
				return !ok || cc.Provider == events.ProviderBuiltin
			})
			return
		}
		s.resolver.SecretChanged(c.Conn, c.Name)
	case registry.KindExport:
		s.exporter.Changed()
	}
}

// connectionsOf maps the connections the exports use (each connection
// change reconciles the exports: this is not a copy of every connection).
func (s *Service) connectionsOf(exports []events.Export) map[string]events.Connection {
	m := map[string]events.Connection{}
	for _, x := range exports {
		if c, ok := s.reg.Connection(x.Connection); ok {
			m[x.Connection] = c
		}
	}
	return m
}

func (s *Service) ready() error {
	if s.nc == nil || !s.nc.IsConnected() {
		return errors.New("NATS not connected")
	}
	return s.health()
}

// ClientURL is the NATS URL the worker is connected to (for the embedded
// server, the URL other processes use).
func (s *Service) ClientURL() string {
	if s.embedded != nil {
		return s.embedded.ClientURL()
	}
	return s.nc.ConnectedUrl()
}

// HTTPAddr is the monitoring server's address, or "" when disabled.
func (s *Service) HTTPAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.Addr()
}

// ServiceID is the micro service instance id, or "" while the worker is not
// taking requests.
func (s *Service) ServiceID() string {
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	if s.svc == nil {
		return ""
	}
	return s.svc.ID()
}

// Stop stops taking requests, finishes those in flight, stops the export
// consumers after flushing their batches, drains the NATS connection and
// stops the embedded server, all within ctx.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Service) stop(ctx context.Context) error {
	var errs []error
	if s.stopHealth != nil {
		s.stopHealth()
		<-s.healthDone
	}
	s.svcMu.Lock()
	s.stopping = true
	s.svcMu.Unlock()
	if err := s.removeEndpoints(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping the service: %w", err))
	}
	if s.runner != nil {
		if err := s.waitIdle(ctx); err != nil {
			errs = append(errs, fmt.Errorf("finishing requests in flight: %w", err))
		}
	}
	if s.auditor != nil {
		if err := s.auditor.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.auditNC != nil {
		if err := drain(ctx, s.auditNC); err != nil {
			errs = append(errs, err)
		}
	}
	// Without a server nothing can be acked or unsubscribed: the export
	// batches are redelivered later, so do not spend the whole deadline.
	phase := ctx
	if s.nc != nil && !s.nc.IsConnected() {
		var cancel context.CancelFunc
		phase, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	if s.exporter != nil {
		if err := s.exporter.Stop(phase); err != nil && s.nc.IsConnected() {
			errs = append(errs, fmt.Errorf("stopping log export: %w", err))
		}
	}
	if s.rotations != nil {
		// Before the drain: a consumer handling an event publishes its broadcast.
		if err := s.rotations.Stop(phase); err != nil && s.nc.IsConnected() {
			errs = append(errs, fmt.Errorf("stopping rotation event consumers: %w", err))
		}
	}
	if s.reg != nil {
		s.reg.Stop(phase)
	}
	if s.resolver != nil {
		s.resolver.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
	if s.nc != nil {
		if err := drain(ctx, s.nc); err != nil {
			errs = append(errs, err)
		}
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.log.Info().Msg("cloudbridge worker stopped")
	return errors.Join(errs...)
}

// waitIdle waits for requests in flight, including those still queued on the
// draining subscriptions: a flush round trip guarantees every request the
// server sent before the unsubscribe has arrived.
func (s *Service) waitIdle(ctx context.Context) error {
	if err := s.runner.Wait(ctx); err != nil {
		return err
	}
	if s.nc.IsConnected() {
		_ = s.nc.FlushWithContext(ctx)
	}
	for i := 0; i < 3; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if err := s.runner.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

func drain(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	if !nc.IsConnected() {
		// Nothing can be drained without a server: waiting would only burn
		// the shutdown deadline.
		nc.Close()
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return nil
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("draining NATS connection: %w", ctx.Err())
	}
}

// abort stops whatever Start got running before it failed.
func (s *Service) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Stop(ctx)
}

// Run starts a worker and stops it when ctx is cancelled, within the
// configured shutdown timeout.
func Run(ctx context.Context, cfg config.Serve, log zerolog.Logger) error {
	s, err := Start(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while starting (NATS not there yet, buckets not
			// bound yet): a clean stop.
			log.Info().Str("err", err.Error()).Msg("stopped before start-up completed")
			return nil
		}
		return err
	}
	<-ctx.Done()
	log.Info().Msg("shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return s.Stop(sctx)
}

// logsSubjects are the subjects export filters must lie within: the
// configured ones, unless an existing stream is bound (its own subjects rule).
// The audit stream's subjects are allowed too: an export block whose filters
// are audit subjects reads the audit stream.
func logsSubjects(cfg config.Serve, subjects events.Subjects) []string {
	if cfg.LogsStream != "" {
		return nil
	}
	return append(append([]string(nil), cfg.LogsSubjects...), subjects.AuditWildcard())
}
