// Package registry is cloudbridge's state in JetStream KV: connections and
// built-in secrets, sealed at rest, and export blocks. Every worker watches the
// buckets, so a change made through any worker is in force on all of them.
package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// Kind says what changed.
type Kind int

// Change kinds.
const (
	KindConnection Kind = iota + 1
	KindSecret
	KindExport
)

// Change is one watched change. Name is the connection or export name; for a
// secret, Conn and Name name it.
type Change struct {
	Kind    Kind
	Conn    string
	Name    string
	Deleted bool
}

// Options configure the registry.
type Options struct {
	// Prefix names the buckets (events.Subjects.Bucket): <prefix>_connections,
	// _secrets, _exports.
	Prefix string
	// Replicas of each bucket (1 unless clustered).
	Replicas int
	// LogsSubjects, when set, are the subjects the logs stream captures:
	// an export's subject filters must lie within them.
	LogsSubjects []string
	Logger       zerolog.Logger
	// Providers checks, redacts and keeps the redacted fields of connections
	// put (default: all.Table, every provider of the worker).
	Providers Providers
}

// Providers is what the registry needs of the provider table
// (internal/provider.Table).
type Providers interface {
	Validate(c *events.Connection) error
	KeepRedacted(c, prev *events.Connection) error
	Redact(c events.Connection) events.Connection
}

// Registry reads and writes the KV buckets and keeps a watched in-memory view
// of connections and exports.
type Registry struct {
	opts    Options
	js      jetstream.JetStream
	sealer  *seal.Sealer
	log     zerolog.Logger
	conns   *bucket
	secrets *bucket
	exports *bucket

	mu          sync.RWMutex
	connections map[string]events.Connection
	exportsByNm map[string]events.Export
	listeners   []func(Change)

	ready  atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// bucket is one KV bucket and the last revision its watcher has applied.
type bucket struct {
	name string
	kv   jetstream.KeyValue

	mu   sync.Mutex
	seen uint64
	wake chan struct{}
}

func (b *bucket) markSeen(rev uint64) {
	b.mu.Lock()
	if rev > b.seen {
		b.seen = rev
	}
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// waitSeen waits until the watcher has applied revision rev, so this worker's
// own view includes a write it just made.
func (b *bucket) waitSeen(ctx context.Context, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		b.mu.Lock()
		seen, wake := b.seen, b.wake
		b.mu.Unlock()
		if seen >= rev {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// waitLatest waits until the watcher has applied the bucket's last write,
// a delete included (which returns no revision to wait for).
func (b *bucket) waitLatest(ctx context.Context) {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return
	}
	if si, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo }); ok {
		b.waitSeen(ctx, si.StreamInfo().State.LastSeq)
	}
}

// Open creates or binds the buckets, idempotently.
func Open(ctx context.Context, js jetstream.JetStream, sealer *seal.Sealer, opts Options) (*Registry, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Providers == nil {
		opts.Providers = all.Table
	}
	r := &Registry{opts: opts, js: js, sealer: sealer, log: opts.Logger,
		connections: map[string]events.Connection{}, exportsByNm: map[string]events.Export{}}
	for _, b := range []struct {
		dst  **bucket
		what string
		desc string
	}{
		{&r.conns, events.BucketConnections, "cloudbridge connections (sensitive fields sealed)"},
		{&r.secrets, events.BucketSecrets, "cloudbridge built-in secrets (sealed)"},
		{&r.exports, events.BucketExports, "cloudbridge log export blocks"},
	} {
		name := events.Subjects{Prefix: opts.Prefix}.Bucket(b.what)
		kv, err := ensureBucket(ctx, js, jetstream.KeyValueConfig{Bucket: name, Description: b.desc,
			History: 1, Storage: jetstream.FileStorage, Replicas: opts.Replicas})
		if err != nil {
			return nil, err
		}
		*b.dst = &bucket{name: name, kv: kv, wake: make(chan struct{})}
	}
	return r, nil
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("binding bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// OnChange registers fn to be called, from the watcher goroutine, for every change.
// Register before Start to see the initial state too.
func (r *Registry) OnChange(fn func(Change)) {
	r.mu.Lock()
	r.listeners = append(r.listeners, fn)
	r.mu.Unlock()
}

// Start starts the watchers and returns once the current state is loaded.
func (r *Registry) Start(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	loaded := make(chan struct{}, 3)
	for _, w := range []struct {
		b     *bucket
		apply func(jetstream.KeyValueEntry)
		opts  []jetstream.WatchOpt
	}{
		{r.conns, r.applyConnection, nil},
		{r.exports, r.applyExport, nil},
		{r.secrets, r.applySecret, []jetstream.WatchOpt{jetstream.MetaOnly()}},
	} {
		kw, err := w.b.kv.WatchAll(wctx, w.opts...)
		if err != nil {
			cancel()
			return fmt.Errorf("watching bucket %s: %w", w.b.name, err)
		}
		r.wg.Add(1)
		go r.watch(wctx, kw, w.b, w.apply, loaded)
	}
	for i := 0; i < 3; i++ {
		select {
		case <-loaded:
		case <-ctx.Done():
			cancel()
			return fmt.Errorf("loading registry: %w", ctx.Err())
		}
	}
	r.ready.Store(true)
	return nil
}

func (r *Registry) watch(ctx context.Context, kw jetstream.KeyWatcher, b *bucket, apply func(jetstream.KeyValueEntry), loaded chan<- struct{}) {
	defer r.wg.Done()
	defer func() { _ = kw.Stop() }()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-kw.Updates():
			if !ok {
				return
			}
			if e == nil {
				if initial {
					initial = false
					loaded <- struct{}{}
				}
				continue
			}
			apply(e)
			b.markSeen(e.Revision())
		}
	}
}

// Ready reports whether the buckets are bound and the initial state loaded.
func (r *Registry) Ready() bool { return r.ready.Load() }

// Stop stops the watchers, waiting for them at most until ctx is done.
func (r *Registry) Stop(ctx context.Context) {
	r.ready.Store(false)
	if r.cancel != nil {
		r.cancel()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (r *Registry) notify(c Change) {
	r.mu.RLock()
	ls := append([]func(Change){}, r.listeners...)
	r.mu.RUnlock()
	for _, fn := range ls {
		fn(c)
	}
}

func isDelete(e jetstream.KeyValueEntry) bool {
	return e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
}

// translate maps KV errors to wire errors whose message is doing (built from
// names only) and the code; the KV error's own text stays in the cause, for
// the log, never in a reply.
func translate(doing string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return events.Wrap(events.CodeTimeout, err, "%s: timeout", doing)
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return events.Wrap(events.CodeNotFound, err, "%s: not found", doing)
	case errors.Is(err, jetstream.ErrInvalidKey):
		// A name that cannot be a key names nothing stored.
		return events.Wrap(events.CodeNotFound, err, "%s: not found", doing)
	default:
		return events.Wrap(events.CodeUnavailable, err, "%s: the registry (JetStream KV) is unavailable", doing)
	}
}
