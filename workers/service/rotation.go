package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
	"github.com/cloudbridge/cloudbridge/workers/resolve"
)

// rotations runs, in this worker, one change-event consumer (a
// rotation.Runner) for each connection whose provider block sets events
// (aws.events, gcp.events), and starts, replaces and stops them as
// connections are put and deleted.
//
// Every worker consumes: an SQS message or a Pub/Sub message goes to one
// consumer at a time (the visibility timeout, the ack deadline), and the
// consumer that handles it publishes the invalidate broadcast with refresh,
// so every worker (itself included) drops the secret and re-reads it ahead
// if it had it cached. Several consumers of one queue are therefore safe,
// and a pool keeps consuming as long as one worker runs.
//
// While a connection's consumer cannot receive (degraded), this worker caps
// the connection's cache TTL at events.degraded_ttl.
type rotations struct {
	nc        *nats.Conn
	subjects  events.Subjects
	factories map[string]provider.Factory
	cache     *cache.Store
	log       zerolog.Logger
	conns     func() []events.Connection

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}

	// busy is set while a reconcile runs: a change then may be missing
	// from the state it read (Concerns).
	busy atomic.Bool

	mu      sync.Mutex
	running map[string]*consumer
}

// consumer is the runner of one connection, with the connection as it was
// when the runner started.
type consumer struct {
	conn   []byte // the connection's JSON: any change replaces the runner
	runner *rotation.Runner
}

func newRotations(nc *nats.Conn, subjects events.Subjects, factories map[string]provider.Factory, c *cache.Store,
	log zerolog.Logger, conns func() []events.Connection) *rotations {
	ctx, cancel := context.WithCancel(context.Background())
	r := &rotations{nc: nc, subjects: subjects, factories: factories, cache: c, log: log, conns: conns,
		kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}), running: map[string]*consumer{}}
	go r.loop(ctx)
	r.Changed()
	return r
}

// Changed says the connections changed: the consumers are brought in line
// with them in the background.
func (r *rotations) Changed() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *rotations) loop(ctx context.Context) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.busy.Store(true)
		r.reconcile(ctx)
		r.busy.Store(false)
	}
}

// stopTimeout bounds the stop of one replaced consumer.
const stopTimeout = 5 * time.Second

// reconcile stops the consumers of connections that are gone, changed or no
// longer set events, then starts those missing.
func (r *rotations) reconcile(ctx context.Context) {
	want := map[string]events.Connection{}
	for _, c := range r.conns() {
		if setsEvents(c) {
			want[c.Name] = c
		}
	}
	r.mu.Lock()
	var stale []string
	for name, cons := range r.running {
		c, ok := want[name]
		if !ok || !bytes.Equal(cons.conn, fingerprint(c)) {
			stale = append(stale, name)
		}
	}
	r.mu.Unlock()
	for _, name := range stale {
		sctx, cancel := context.WithTimeout(ctx, stopTimeout)
		r.stopOne(sctx, name)
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, c := range want {
		if _, ok := r.running[name]; !ok {
			r.running[name] = r.start(c)
		}
	}
}

// eventsKind is the change-event side of a provider's kind (false when the
// provider has no change events).
func eventsKind(name string) (provider.EventsKind, bool) {
	k, ok := all.Table.Kind(name)
	if !ok {
		return nil, false
	}
	ek, ok := k.(provider.EventsKind)
	return ek, ok
}

// hasEvents reports whether a provider has change events at all.
func hasEvents(name string) bool {
	_, ok := eventsKind(name)
	return ok
}

// eventsOf reports whether c's rotation events are on, and the cache TTL of
// its secrets while its consumer is degraded.
func eventsOf(c events.Connection) (degradedTTL time.Duration, on bool) {
	ek, ok := eventsKind(c.Provider)
	if !ok {
		return 0, false
	}
	return ek.Events(&c)
}

// setsEvents reports whether c's rotation events are on.
func setsEvents(c events.Connection) bool {
	_, on := eventsOf(c)
	return on
}

// Concerns reports whether a change of connection name (now c, or gone when
// !ok) may change the consumers: it sets events, or one of it runs. Others
// (most connections) need no reconcile.
func (r *rotations) Concerns(name string, c events.Connection, ok bool) bool {
	if (ok && setsEvents(c)) || r.busy.Load() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, running := r.running[name]
	return running
}

// fingerprint tells whether a connection changed without keeping its
// credentials in memory: a hash of its JSON.
func fingerprint(c events.Connection) []byte {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return sum[:]
}

// start starts the consumer of c (r.mu held).
func (r *rotations) start(c events.Connection) *consumer {
	degradedTTL, _ := eventsOf(c)
	name := c.Name
	src := &lazySource{conn: c, factory: r.factories[c.Provider]}
	runner := rotation.Start(rotation.Config{
		Connection: name,
		Source:     src,
		Allowed:    c.AllowsSecret,
		Handle:     r.handle,
		OnHealth: func(degraded bool) {
			if degraded {
				r.cache.LimitTTL(name, degradedTTL)
			} else {
				r.cache.LimitTTL(name, 0)
			}
		},
		Log: r.log,
	})
	r.log.Info().Str("conn", name).Str("provider", c.Provider).Msg("rotation events: consumer started")
	return &consumer{conn: fingerprint(c), runner: runner}
}

// stopOne stops the consumer of name and lifts its TTL cap.
func (r *rotations) stopOne(ctx context.Context, name string) {
	r.mu.Lock()
	cons := r.running[name]
	delete(r.running, name)
	r.mu.Unlock()
	if cons == nil {
		return
	}
	if err := cons.runner.Stop(ctx); err != nil {
		r.log.Warn().Str("conn", name).Err(err).Msg("rotation events: stopping the consumer")
	}
	r.cache.LimitTTL(name, 0)
	r.log.Info().Str("conn", name).Msg("rotation events: consumer stopped")
}

// handle publishes the invalidate broadcast of a change: every worker drops
// the secret, and (but for a deletion) re-reads it ahead if it had it. It
// returns once the server has the broadcast; an error leaves the event
// unacknowledged, to be delivered again.
func (r *rotations) handle(ctx context.Context, c rotation.Change) error {
	body, err := events.Marshal(events.InvalidateRequest{Connection: c.Connection, Secret: c.Secret, Refresh: c.Kind != rotation.Deleted})
	if err != nil {
		return err
	}
	if err := r.nc.Publish(r.subjects.Invalidate(), body); err != nil {
		return fmt.Errorf("publishing the invalidate broadcast: %w", err)
	}
	if err := r.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flushing the invalidate broadcast: %w", err)
	}
	return nil
}

// Stop stops every consumer, within ctx.
func (r *rotations) Stop(ctx context.Context) error {
	r.stop()
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	names := make([]string, 0, len(r.running))
	for name := range r.running {
		names = append(names, name)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stopOne(ctx, name)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// Degraded reports whether the consumer of conn on this worker cannot
// receive, the class of why (a wire code, rotation.CauseClass: never the
// cloud's text) and since when; false when it receives or there is none.
// The resolve worker's conn test reports it (resolve.EventHealth).
func (r *rotations) Degraded(conn string) (degraded bool, cause string, since time.Time) {
	r.mu.Lock()
	cons := r.running[conn]
	r.mu.Unlock()
	if cons == nil {
		return false, "", time.Time{}
	}
	h := cons.runner.Health()
	if !h.Degraded {
		return false, "", time.Time{}
	}
	return true, string(rotation.CauseClass(h.Cause)), h.Since
}

var _ resolve.EventHealth = (*rotations)(nil)

// lazySource builds the connection's own provider, and from it the event
// source, on the first receive, and again after a failed build: a connection
// whose credentials or client cannot be set up is degraded like one whose
// queue cannot be read, and retried with the runner's backoff. The provider
// is the consumer's own (its own credentials cache), closed with it.
type lazySource struct {
	conn    events.Connection
	factory provider.Factory
	p       provider.Resolver
	src     rotation.Source
}

func (l *lazySource) Receive(ctx context.Context) ([]rotation.Message, error) {
	if l.src == nil {
		if l.factory == nil {
			return nil, fmt.Errorf("provider %s is not available in this worker", l.conn.Provider)
		}
		p, err := l.factory(ctx, l.conn)
		if err != nil {
			return nil, fmt.Errorf("setting up the provider: %w", err)
		}
		es, ok := p.(provider.EventSourcer)
		if !ok {
			closeResolver(p)
			return nil, errors.New("the provider cannot read change events")
		}
		src, err := es.RotationSource(ctx)
		if err != nil {
			closeResolver(p)
			return nil, fmt.Errorf("setting up the event source: %w", err)
		}
		l.p, l.src = p, src
	}
	return l.src.Receive(ctx)
}

// Close closes the source and the provider (the runner calls it once, after
// its last Receive).
func (l *lazySource) Close() error {
	var err error
	if c, ok := l.src.(io.Closer); ok {
		err = c.Close()
	}
	if l.p != nil {
		closeResolver(l.p)
	}
	return err
}

func closeResolver(p provider.Resolver) {
	if c, ok := p.(provider.Closer); ok {
		_ = c.Close()
	}
}
