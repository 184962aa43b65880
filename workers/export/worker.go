// Package export is the log export worker: it reads the logs stream through
// one shared durable pull consumer per export block, batches events within the
// sink's limits, delivers them to CloudWatch Logs or Cloud Logging, and acks a
// message only after the call that carried it succeeded. What the cloud
// rejects for good goes to the dead-letter stream with its reason.
//
// Acks: the consumers use AckExplicit and the worker acks every message of a
// batch once the batch is delivered (acks are pipelined publishes, one flush
// per batch). AckAll would need one ack per batch, but an export's consumer is
// shared by every worker, and an AckAll from one worker would also ack the
// lower sequences another worker still holds in an undelivered batch, losing
// them if that worker died.
package export

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
)

// Defaults.
const (
	DefaultAckWait      = 30 * time.Second
	DefaultRetryMin     = 100 * time.Millisecond
	DefaultRetryMax     = 5 * time.Second
	DefaultTooNewMax    = 10 * time.Minute
	DefaultStopTimeout  = 30 * time.Second
	futureDeadLetterAge = 14 * 24 * time.Hour
)

// The streams' names for the default prefix (events.Subjects.LogsStream and
// DeadStream).
var (
	DefaultLogsStream = events.Subjects{}.LogsStream()
	DefaultDeadStream = events.Subjects{}.DeadStream()
)

// DefaultLogsSubjects are the subjects of the logs stream unless configured.
var DefaultLogsSubjects = []string{"logs.>"}

var nopLogger = zerolog.Nop()

// Config configures the worker.
type Config struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Subjects builds cloudbridge.v1.exported.<export> and .dead.<export>.
	Subjects events.Subjects
	// LogsStream is the stream log events are read from (default CLOUDBRIDGE_LOGS).
	LogsStream string
	// LogsSubjects are the stream's subjects when the worker creates it (default logs.>).
	LogsSubjects []string
	// BindStream binds an existing stream named LogsStream instead of creating or updating it.
	BindStream bool
	// MaxAge and MaxBytes are the logs stream's retention limits (0 = unlimited).
	MaxAge   time.Duration
	MaxBytes int64
	// DeadStream is the dead-letter stream (default CLOUDBRIDGE_DEAD).
	DeadStream string
	// AuditStream is the audit stream (created by the service): an export
	// block whose filters all lie under Subjects.AuditWildcard reads it
	// instead of the logs stream. Empty: every block reads the logs stream.
	AuditStream string
	// Replicas of the logs and dead-letter streams when created (0 = the
	// server's default, 1); their consumers inherit it.
	Replicas int
	// Sinks builds an export block's sink.
	Sinks SinkFactory
	// Logger receives the worker's logs (default: none).
	Logger zerolog.Logger

	// AckWait is how long a fetched message may stay unacked before JetStream
	// redelivers it (default 30s); retries extend it while they run.
	AckWait time.Duration
	// RetryMin and RetryMax bound the backoff between retries of a failed
	// call (default 100ms and 5s).
	RetryMin, RetryMax time.Duration
	// TooNewMax caps how long an event rejected as too far in the future
	// waits before it is redelivered (default 10m).
	TooNewMax time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.LogsStream == "" {
		c.LogsStream = DefaultLogsStream
	}
	if len(c.LogsSubjects) == 0 {
		c.LogsSubjects = DefaultLogsSubjects
	}
	if c.DeadStream == "" {
		c.DeadStream = DefaultDeadStream
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.TooNewMax <= 0 {
		c.TooNewMax = DefaultTooNewMax
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Worker runs the export blocks on this process.
type Worker struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	runners map[string]*runner
	want    map[string]spec
	stopWG  sync.WaitGroup
}

// spec is what a runner is built from; a change restarts the runner.
type spec struct {
	exp  events.Export
	conn events.Connection
}

// New checks cfg and returns a worker; Start starts it.
func New(cfg Config) (*Worker, error) {
	cfg.defaults()
	if cfg.NC == nil || cfg.JS == nil {
		return nil, errors.New("export worker: NC and JS are required")
	}
	if cfg.Sinks == nil {
		return nil, errors.New("export worker: a SinkFactory is required")
	}
	return &Worker{cfg: cfg, log: cfg.Logger, runners: map[string]*runner{}}, nil
}

// Start ensures the logs stream (file storage; or binds it) and the
// dead-letter stream, then runs the export blocks given to Apply.
func (w *Worker) Start(ctx context.Context) error {
	if w.cfg.BindStream {
		if _, err := w.cfg.JS.Stream(ctx, w.cfg.LogsStream); err != nil {
			return fmt.Errorf("binding logs stream %s: %w", w.cfg.LogsStream, err)
		}
	} else {
		_, err := w.cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:      w.cfg.LogsStream,
			Subjects:  w.cfg.LogsSubjects,
			Storage:   jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy,
			MaxAge:    w.cfg.MaxAge,
			MaxBytes:  orUnlimited(w.cfg.MaxBytes),
			Replicas:  w.cfg.Replicas,
		})
		if err != nil {
			return fmt.Errorf("creating logs stream %s: %w", w.cfg.LogsStream, err)
		}
	}
	_, err := w.cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       w.cfg.DeadStream,
		Subjects:   []string{w.cfg.Subjects.DeadWildcard()},
		Storage:    jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
		Replicas:   w.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("creating dead-letter stream %s: %w", w.cfg.DeadStream, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.started = true
	w.reconcile()
	return nil
}

// streamOf is the stream export block x reads: the audit stream when its
// filters are all audit subjects, else the logs stream.
func (w *Worker) streamOf(x events.Export) string {
	if w.cfg.AuditStream == "" || len(x.Subjects) == 0 {
		return w.cfg.LogsStream
	}
	for _, f := range x.Subjects {
		if !events.SubjectWithin(f, []string{w.cfg.Subjects.AuditWildcard()}) {
			return w.cfg.LogsStream
		}
	}
	return w.cfg.AuditStream
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Apply makes the running export blocks match exports (with their
// connections): new blocks start, changed blocks restart, removed blocks stop
// and their durable consumer is deleted. It returns once the changed and
// removed blocks have flushed what they held (at most DefaultStopTimeout), so
// events published after Apply returns go through the new blocks. Call it at
// start and on every registry change; before Start it only records the blocks.
func (w *Worker) Apply(exports []events.Export, conns map[string]events.Connection) {
	want := make(map[string]spec, len(exports))
	for _, e := range exports {
		if err := e.Validate(); err != nil {
			w.log.Error().Str("export", e.Name).Err(err).Msg("skipping invalid export block")
			continue
		}
		c, ok := conns[e.Connection]
		if !ok {
			w.log.Error().Str("export", e.Name).Str("conn", e.Connection).Msg("skipping export block: unknown connection")
			continue
		}
		want[e.Name] = spec{exp: e, conn: c}
	}
	w.mu.Lock()
	w.want = want
	var stopped []chan struct{}
	if w.started && !w.stopped {
		stopped = w.reconcile()
	}
	w.mu.Unlock()
	for _, c := range stopped {
		<-c
	}
}

// reconcile runs under w.mu. A changed block's new runner starts once the
// old one has flushed, so events published after the change use the new block.
func (w *Worker) reconcile() (stopping []chan struct{}) {
	previous := map[string]chan struct{}{}
	for name, r := range w.runners {
		sp, keep := w.want[name]
		if keep && reflect.DeepEqual(sp, r.spec) {
			continue
		}
		delete(w.runners, name)
		stopped := make(chan struct{})
		previous[name] = stopped
		stopping = append(stopping, stopped)
		w.stopWG.Add(1)
		go func() {
			defer w.stopWG.Done()
			defer close(stopped)
			ctx, cancel := context.WithTimeout(context.Background(), DefaultStopTimeout)
			defer cancel()
			if err := r.stop(ctx); err != nil {
				w.log.Warn().Str("export", name).Err(err).Msg("export stopped before its batch was flushed")
			}
			if !keep {
				if err := w.cfg.JS.DeleteConsumer(ctx, w.streamOf(r.spec.exp), events.ExportConsumer(name)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					w.log.Warn().Str("export", name).Err(err).Msg("deleting the export's consumer")
				}
			}
		}()
	}
	for name, sp := range w.want {
		if _, ok := w.runners[name]; ok {
			continue
		}
		r := newRunner(w, sp)
		w.runners[name] = r
		go r.run(previous[name])
	}
	return stopping
}

// Stop stops fetching, flushes and acks the batches in flight, within ctx.
// Batches that cannot be delivered in time are left unacked (negatively
// acknowledged) for redelivery.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	w.stopped = true
	runners := w.runners
	w.runners = map[string]*runner{}
	w.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, len(runners)+1) // +1: the deadline below never blocks
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.stop(ctx); err != nil {
				errs <- fmt.Errorf("stopping export %s: %w", r.spec.exp.Name, err)
			}
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { w.stopWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs <- ctx.Err()
	}
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := w.cfg.NC.FlushWithContext(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		all = append(all, fmt.Errorf("flushing acks: %w", err))
	}
	return errors.Join(all...)
}

// Running lists the export blocks this worker runs, for tests and status.
func (w *Worker) Running() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.runners))
	for n := range w.runners {
		out = append(out, n)
	}
	return out
}
