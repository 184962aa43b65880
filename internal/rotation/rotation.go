// Package rotation consumes a connection's secret change events (AWS Secrets
// Manager through EventBridge and SQS, Google Secret Manager through Pub/Sub)
// and hands each change of an allowed secret to the consumer, which
// invalidates it. The cloud-specific part is a Source (in the provider
// packages); this package owns what is common: deduplication, the allowlist,
// acknowledging after handling, backoff on receive errors, health (degraded
// while the source cannot receive) and metrics.
//
// Events are best effort in both clouds: a consumer keeps its TTL-based change
// check as a safety net, and shortens the TTL while the runner is Degraded.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/pause"
)

// Kind is what happened to a secret.
type Kind string

// Kinds of change.
const (
	// Changed: a new value or a version moved (put, rotation, stage update, disable).
	Changed Kind = "changed"
	// Deleted: the secret was deleted (or scheduled for deletion).
	Deleted Kind = "deleted"
	// Restored: a deleted secret was restored.
	Restored Kind = "restored"
)

// Change is one secret changed in the cloud.
type Change struct {
	// Connection is the connection whose events reported it (set by the Runner).
	Connection string
	// Secret is the name requesters use for the secret.
	Secret string
	// Resource is the cloud's own identifier (an ARN, a resource name).
	Resource string
	Kind     Kind
	// EventTime is when the cloud says the change happened (zero if unknown).
	EventTime time.Time
	// ID identifies the event; redeliveries of one event share it.
	ID string
}

// TypeMalformed is the event type counted for a message that cannot be read.
const TypeMalformed = "malformed"

// Message is one received message: an event carrying zero or more changes
// (zero for an event that is not a change), or a malformed one (Err set).
// The Runner acknowledges it after handling it.
type Message struct {
	// ID identifies the event for deduplication (the cloud's event or
	// message id); empty disables deduplication of this message.
	ID string
	// Type is the event type, a metrics label: "PutSecretValue",
	// "SECRET_VERSION_ADD", TypeMalformed, or "other" for unknown ones.
	Type    string
	Changes []Change
	// Err is why the message could not be read; it is logged and dropped.
	Err error
	// Ack removes the message from the queue or subscription (nil: nothing to do).
	Ack func(ctx context.Context) error
}

// Source receives a connection's change events. Receive waits for the next
// messages (a long poll) and returns them, possibly none; an error means the
// source cannot receive now, and the Runner retries with backoff. It must
// return promptly when ctx is done. A Source that is an io.Closer is closed
// when the Runner stops.
type Source interface {
	Receive(ctx context.Context) ([]Message, error)
}

// Defaults of Config.
const (
	DefaultDedupWindow   = 10 * time.Minute
	DefaultDedupMax      = 10000
	DefaultMinBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultHandleTimeout = 10 * time.Second
	DefaultAckTimeout    = 10 * time.Second
)

// Config configures a Runner.
type Config struct {
	Connection string
	Source     Source
	// Allowed reports whether a secret is in the connection's allowlist;
	// changes of other secrets are dropped. Required.
	Allowed func(secret string) bool
	// Handle invalidates the secret of a change. An error leaves the message
	// unacknowledged, to be delivered again. Required.
	Handle func(ctx context.Context, c Change) error
	// OnHealth is told when the runner becomes degraded or recovers (optional).
	OnHealth func(degraded bool)
	Log      zerolog.Logger

	DedupWindow   time.Duration // how long an event id is remembered (DefaultDedupWindow)
	DedupMax      int           // how many ids at most (DefaultDedupMax)
	MinBackoff    time.Duration // first wait after a failed receive (DefaultMinBackoff)
	MaxBackoff    time.Duration // longest wait (DefaultMaxBackoff)
	HandleTimeout time.Duration // deadline of one Handle call (DefaultHandleTimeout)
	AckTimeout    time.Duration // deadline of one Ack call (DefaultAckTimeout)
}

// Health is a runner's receive health.
type Health struct {
	// Degraded: the last receive failed.
	Degraded bool
	// Since is when the current state began (zero before the first receive).
	Since time.Time
	// Cause is the last receive error while degraded (for logs and operators).
	Cause error
	// LastReceive is when a receive last succeeded (zero if never).
	LastReceive time.Time
}

// Runner consumes one Source until stopped. It is safe for concurrent use.
type Runner struct {
	cfg    Config
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	degraded atomic.Bool
	mu       sync.Mutex
	health   Health
	dedup    dedup
	failures int
	logLimit limiter
}

// Start starts consuming cfg.Source. It panics on a missing Source, Allowed
// or Handle (a programming error).
func Start(cfg Config) *Runner {
	if cfg.Source == nil || cfg.Allowed == nil || cfg.Handle == nil {
		panic("rotation.Start: Source, Allowed and Handle are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DedupWindow, DefaultDedupWindow)
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.HandleTimeout, DefaultHandleTimeout)
	def(&cfg.AckTimeout, DefaultAckTimeout)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.DedupMax <= 0 {
		cfg.DedupMax = DefaultDedupMax
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{
		cfg: cfg, log: cfg.Log.With().Str("conn", cfg.Connection).Logger(),
		cancel: cancel, done: make(chan struct{}),
		dedup: dedup{window: cfg.DedupWindow, max: cfg.DedupMax, seen: map[string]time.Time{}},
	}
	metricDegraded.WithLabelValues(cfg.Connection).Set(0)
	go r.run(ctx)
	return r
}

// Stop stops receiving and waits for the runner to end, or for ctx to be
// done (then it returns ctx's error; the runner still ends as soon as its
// current call returns). It closes the Source if it is an io.Closer. Stop may
// be called more than once.
func (r *Runner) Stop(ctx context.Context) error {
	r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		// A receive that outlives ctx (a long poll ignoring cancellation)
		// still gets its source closed, once it returns.
		go func() {
			<-r.done
			_ = r.close()
		}()
		return ctx.Err()
	}
	return r.close()
}

// close releases the source (once), after the run has ended.
func (r *Runner) close() error {
	var err error
	r.once.Do(func() {
		metricDegraded.DeleteLabelValues(r.cfg.Connection)
		if c, ok := r.cfg.Source.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}

// Degraded reports whether the last receive failed.
func (r *Runner) Degraded() bool { return r.degraded.Load() }

// Health returns the runner's receive health.
func (r *Runner) Health() Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.health
}

func (r *Runner) run(ctx context.Context) {
	defer close(r.done)
	for {
		msgs, err := r.receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !pause.For(ctx, r.failed(err)) {
				return
			}
			continue
		}
		r.succeeded()
		for _, m := range msgs {
			if ctx.Err() != nil {
				return // unacknowledged: delivered again to whoever reads next
			}
			r.process(ctx, m)
		}
	}
}

// receive calls the source, turning a panic into an error.
func (r *Runner) receive(ctx context.Context) (msgs []Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("source panicked: %v", p)
		}
	}()
	return r.cfg.Source.Receive(ctx)
}

// failed records a failed receive and returns how long to wait.
func (r *Runner) failed(err error) time.Duration {
	metricReceiveErrors.WithLabelValues(r.cfg.Connection).Inc()
	r.mu.Lock()
	r.failures++
	n := r.failures
	was := r.health.Degraded
	if !was {
		r.health = Health{Degraded: true, Since: time.Now(), LastReceive: r.health.LastReceive}
	}
	r.health.Cause = err
	r.mu.Unlock()
	r.degraded.Store(true)
	metricDegraded.WithLabelValues(r.cfg.Connection).Set(1)
	if !was {
		r.log.Warn().Err(err).Msg("rotation events: cannot receive, connection degraded")
		if r.cfg.OnHealth != nil {
			r.cfg.OnHealth(true)
		}
	} else if sup, ok := r.logLimit.allow("receive", 30*time.Second); ok {
		r.log.Warn().Err(err).Int("failures", n).Int("suppressed", sup).Msg("rotation events: still cannot receive")
	}
	return backoff(r.cfg.MinBackoff, r.cfg.MaxBackoff, n)
}

func (r *Runner) succeeded() {
	now := time.Now()
	r.mu.Lock()
	was := r.health.Degraded
	n := r.failures
	r.failures = 0
	if was || r.health.Since.IsZero() {
		r.health = Health{Since: now}
	}
	r.health.LastReceive = now
	r.mu.Unlock()
	if was {
		r.degraded.Store(false)
		metricDegraded.WithLabelValues(r.cfg.Connection).Set(0)
		r.log.Info().Int("failures", n).Msg("rotation events: receiving again, connection recovered")
		if r.cfg.OnHealth != nil {
			r.cfg.OnHealth(false)
		}
	}
}

// backoff is the jittered exponential wait after the n-th consecutive failure.
func backoff(min, max time.Duration, n int) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// Results of a message, a metrics label.
const (
	resultInvalidated = "invalidated"
	resultDuplicate   = "duplicate"
	resultIgnored     = "ignored" // not a change (SECRET_ROTATE, other API calls)
	resultForeign     = "foreign" // secret outside the allowlist
	resultMalformed   = "malformed"
	resultFailed      = "failed" // Handle failed: left for redelivery
)

// process handles one message and acknowledges it unless handling failed.
func (r *Runner) process(ctx context.Context, m Message) {
	typ := m.Type
	if typ == "" {
		typ = "other"
	}
	result := r.handle(ctx, m)
	metricEvents.WithLabelValues(r.cfg.Connection, typ, result).Inc()
	if result == resultFailed {
		return
	}
	r.ack(ctx, m)
}

func (r *Runner) handle(ctx context.Context, m Message) (result string) {
	if m.Err != nil {
		if sup, ok := r.logLimit.allow("malformed", 10*time.Second); ok {
			r.log.Warn().Err(m.Err).Str("event", m.ID).Int("suppressed", sup).Msg("rotation events: malformed event dropped")
		}
		return resultMalformed
	}
	if r.isDuplicate(m.ID) {
		r.log.Debug().Str("event", m.ID).Str("type", m.Type).Msg("rotation events: duplicate event dropped")
		return resultDuplicate
	}
	result = resultIgnored
	for _, c := range m.Changes {
		c.Connection = r.cfg.Connection
		if c.Secret == "" || !r.cfg.Allowed(c.Secret) {
			if result == resultIgnored {
				result = resultForeign
			}
			continue
		}
		if err := r.call(ctx, c); err != nil {
			if sup, ok := r.logLimit.allow("handle", 10*time.Second); ok {
				r.log.Warn().Err(err).Str("secret", c.Secret).Str("event", m.ID).Int("suppressed", sup).
					Msg("rotation events: invalidation failed, event left for redelivery")
			}
			return resultFailed
		}
		result = resultInvalidated
		metricInvalidations.WithLabelValues(r.cfg.Connection, string(c.Kind)).Inc()
		delay := 0.0
		if !c.EventTime.IsZero() {
			delay = max(time.Since(c.EventTime).Seconds(), 0)
			metricDelay.WithLabelValues(r.cfg.Connection).Observe(delay)
		}
		r.log.Debug().Str("secret", c.Secret).Str("type", m.Type).Str("kind", string(c.Kind)).
			Str("event", m.ID).Float64("delay_s", delay).Msg("rotation events: secret invalidated")
	}
	r.remember(m.ID)
	return result
}

// call runs Handle with its deadline, turning a panic into an error.
func (r *Runner) call(ctx context.Context, c Change) (err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.HandleTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return r.cfg.Handle(ctx, c)
}

func (r *Runner) ack(ctx context.Context, m Message) {
	if m.Ack == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("ack panicked: %v", p)
			}
		}()
		return m.Ack(ctx)
	}()
	if err != nil && !errors.Is(err, context.Canceled) {
		metricAckErrors.WithLabelValues(r.cfg.Connection).Inc()
		if sup, ok := r.logLimit.allow("ack", 30*time.Second); ok {
			r.log.Warn().Err(err).Str("event", m.ID).Int("suppressed", sup).
				Msg("rotation events: cannot acknowledge, the event will be delivered again")
		}
	}
}

func (r *Runner) isDuplicate(id string) bool {
	if id == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dedup.has(id, time.Now())
}

func (r *Runner) remember(id string) {
	if id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dedup.add(id, time.Now())
}

// dedup remembers event ids for a window, at most max of them (oldest first out).
type dedup struct {
	window time.Duration
	max    int
	seen   map[string]time.Time
	order  []dedupEntry
	head   int
}

type dedupEntry struct {
	id string
	at time.Time
}

func (d *dedup) has(id string, now time.Time) bool {
	at, ok := d.seen[id]
	return ok && now.Sub(at) < d.window
}

func (d *dedup) add(id string, now time.Time) {
	d.seen[id] = now
	d.order = append(d.order, dedupEntry{id, now})
	for d.head < len(d.order) {
		e := d.order[d.head]
		if len(d.seen) <= d.max && now.Sub(e.at) < d.window {
			break
		}
		if d.seen[e.id] == e.at {
			delete(d.seen, e.id)
		}
		d.order[d.head] = dedupEntry{}
		d.head++
	}
	if d.head > 1024 && d.head*2 > len(d.order) {
		d.order = append([]dedupEntry(nil), d.order[d.head:]...)
		d.head = 0
	}
}

// limiter rate-limits repeated log lines by key, counting what it suppressed.
type limiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	sup  map[string]int
}

func (l *limiter) allow(key string, every time.Duration) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.sup = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if t, seen := l.last[key]; seen && now.Sub(t) < every {
		l.sup[key]++
		return 0, false
	}
	suppressed = l.sup[key]
	l.last[key], l.sup[key] = now, 0
	return suppressed, true
}
