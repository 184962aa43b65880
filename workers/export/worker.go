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
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
)

// Defaults.
const (
	DefaultAckWait      = 30 * time.Second
	DefaultRetryMin     = 100 * time.Millisecond
	DefaultRetryMax     = 5 * time.Second
	DefaultTooNewMax    = 10 * time.Minute
	DefaultStopTimeout  = 30 * time.Second
	DefaultStatusPeriod = 5 * time.Second
	DefaultWarnEvery    = 30 * time.Second
	// stopGrace is how long a stop waits, after its deadline, for a runner
	// to give back what it held (nak) before it gives up on it.
	stopGrace           = time.Second
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
	// CallTimeout is the deadline of each delivery attempt (a sink Write):
	// default AckWait/2. A call past it is classified
	// retry and resends only what no call accepted; meanwhile its messages
	// are kept alive with InProgress. An attempt that timed out with no call
	// through gets twice the deadline next time, up to 4 × CallTimeout.
	CallTimeout time.Duration
	// StatusInterval is how often each runner refreshes the consumer lag
	// gauge and its status record (default 5s).
	StatusInterval time.Duration
	// WarnEvery rate-limits delivery warnings: one per export per period,
	// with the count of those suppressed (default 30s).
	WarnEvery time.Duration
	// StatusReplicas is the replica count of the status bucket (default 1).
	StatusReplicas int
	// Instance names this worker in the status bucket (default: a unique id).
	Instance string
	// TooNewMax caps how long an event rejected as too far in the future
	// waits before it is redelivered (default 10m).
	TooNewMax time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	// Tests only: noSuppress turns redelivery suppression off (ledger.go);
	// ackHook replaces the ack of an accepted message.
	noSuppress bool
	ackHook    func(jetstream.Msg) error
}

// ack acks an accepted message (through ackHook in tests).
func (c *Config) ack(m jetstream.Msg) error {
	if c.ackHook != nil {
		return c.ackHook(m)
	}
	return m.Ack()
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
	if c.CallTimeout <= 0 {
		c.CallTimeout = c.AckWait / 2
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = DefaultStatusPeriod
	}
	if c.WarnEvery <= 0 {
		c.WarnEvery = DefaultWarnEvery
	}
	if c.StatusReplicas <= 0 {
		c.StatusReplicas = 1
	}
	if c.Instance == "" {
		c.Instance = nuid.Next()
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
	cfg      Config
	log      zerolog.Logger
	instance string
	statusKV jetstream.KeyValue // nil until Start

	mu      sync.Mutex
	started bool
	stopped bool
	runners map[string]*runner
	leaving map[*runner]struct{} // changed or removed blocks still stopping
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
	return &Worker{cfg: cfg, log: cfg.Logger, instance: cfg.Instance, runners: map[string]*runner{}, leaving: map[*runner]struct{}{}}, nil
}

// Start ensures the logs stream (file storage; or binds it) and the
// dead-letter stream, then runs the export blocks given to Apply.
func (w *Worker) Start(ctx context.Context) error {
	if w.cfg.BindStream {
		if _, err := w.cfg.JS.Stream(ctx, w.cfg.LogsStream); err != nil {
			return fmt.Errorf("binding logs stream %s: %w", w.cfg.LogsStream, err)
		}
	} else {
		_, err := bus.EnsureStream(ctx, w.cfg.JS, jetstream.StreamConfig{
			Name:        w.cfg.LogsStream,
			Description: "cloudbridge log events to export (one durable consumer per export block)",
			Subjects:    w.cfg.LogsSubjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      w.cfg.MaxAge,
			MaxBytes:    orUnlimited(w.cfg.MaxBytes),
			Replicas:    w.cfg.Replicas,
		})
		if err != nil {
			if overlaps(err) {
				return overlapError{fmt.Sprintf("creating logs stream %s: its subjects %q overlap another stream's on this NATS "+
					"(another deployment's, with another --prefix?): give this worker non-overlapping --logs-subjects, "+
					"or --logs-stream to share an existing stream", w.cfg.LogsStream, w.cfg.LogsSubjects), err}
			}
			return fmt.Errorf("creating logs stream %s: %w", w.cfg.LogsStream, err)
		}
	}
	_, err := bus.EnsureStream(ctx, w.cfg.JS, jetstream.StreamConfig{
		Name:        w.cfg.DeadStream,
		Description: "cloudbridge dead letters: log events an export can never deliver, with the reason",
		Subjects:    []string{w.cfg.Subjects.DeadWildcard()},
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
		Replicas:    w.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("creating dead-letter stream %s: %w", w.cfg.DeadStream, err)
	}
	bucket := w.cfg.Subjects.Bucket(events.BucketExportStatus)
	kv, err := w.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "cloudbridge export health: one record per export block and worker",
		History:     1,
		TTL:         statusTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.StatusReplicas,
	})
	if err != nil {
		return fmt.Errorf("creating export status bucket %s: %w", bucket, err)
	}
	w.mu.Lock()
	w.statusKV = kv
	defer w.mu.Unlock()
	w.started = true
	w.reconcile()
	return nil
}

// jsSubjectsOverlap is JetStream's "subjects overlap with an existing
// stream" (JSStreamSubjectOverlapErr, a 400).
const jsSubjectsOverlap jetstream.ErrorCode = 10065

func overlaps(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jsSubjectsOverlap
}

// overlapError says what to do about a logs stream whose subjects another
// stream holds; the server's error stays in the chain, not in the text.
type overlapError struct {
	msg string
	err error
}

func (e overlapError) Error() string { return e.msg }
func (e overlapError) Unwrap() error { return e.err }

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
		w.leaving[r] = struct{}{}
		go func() {
			defer w.stopWG.Done()
			defer close(stopped)
			defer func() {
				w.mu.Lock()
				delete(w.leaving, r)
				w.mu.Unlock()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), DefaultStopTimeout)
			defer cancel()
			if !keep {
				// Removed: stop at once, give back what it holds (nak),
				// delete the consumer, so nothing is delivered any more.
				r.removed.Store(true)
				if err := r.stop(ctx, true); err != nil {
					w.log.Warn().Str("export", name).Err(err).Msg("removed export did not stop in time")
				}
				if err := w.cfg.JS.DeleteConsumer(ctx, w.streamOf(r.spec.exp), events.ExportConsumer(name)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					w.log.Warn().Str("export", name).Str("err", events.Detail(err)).Msg("deleting the export's consumer")
				}
				w.forgetStatus(ctx, r)
				w.log.Info().Str("export", name).Msg("export removed: stopped and its consumer deleted")
				return
			}
			if err := r.stop(ctx, false); err != nil {
				w.log.Warn().Str("export", name).Err(err).Msg("export stopped before its batch was flushed")
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
// What cannot be delivered by then is given back to JetStream (nak'ed) for
// redelivery and Stop returns: that is the designed end of a stop, not an
// error (it is logged). Stop returns at most stopGrace after ctx ends,
// whatever the sinks and NATS do; it returns an error only when the naks and
// acks could not be flushed to NATS.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	w.stopped = true
	runners := w.runners
	w.runners = map[string]*runner{}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.stop(ctx, false); err != nil {
				w.log.Warn().Str("export", r.name).Err(err).Msg("export stopped at the shutdown deadline; what it held was nak'ed for redelivery")
			}
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); w.stopWG.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		// The runners were told (their own stop saw ctx end), and so are
		// the blocks still leaving after a change; give them stopGrace to
		// nak, then return whatever they do.
		w.mu.Lock()
		for r := range w.leaving {
			r.stopFetch()
			r.cancelFlush()
		}
		w.mu.Unlock()
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-all:
		case <-t.C:
			w.log.Warn().Msg("export runners still busy after the shutdown deadline; returning (their messages are redelivered after AckWait)")
		}
	}
	fctx, cancel := context.WithTimeout(context.Background(), stopGrace/2)
	defer cancel()
	if ctx.Err() == nil {
		fctx = ctx
	}
	if err := w.cfg.NC.FlushWithContext(fctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("flushing acks: %w", err)
	}
	return nil
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
