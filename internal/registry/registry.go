// Package registry is cloudbridge's state in JetStream KV: connections and
// built-in secrets, sealed at rest, and export blocks. Every worker watches the
// buckets, so a change made through any worker is in force on all of them.
package registry

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
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
// secret, Conn and Name name it. A secret change with Conn empty stands for
// every secret: the secrets bucket was created again, so a value read from
// the bucket deleted is no longer in force.
type Change struct {
	Kind    Kind
	Conn    string
	Name    string
	Deleted bool
	// Initial marks the state Start loads: a listener that acts on the
	// whole state once Start returns may ignore these.
	Initial bool
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
	// AuditSubjects, when set, are the audit stream's subjects: an export
	// reads the audit stream when all its filters lie within them, else the
	// logs stream, so its filters may not mix the two.
	AuditSubjects []string
	Logger        zerolog.Logger
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

	// seenGen is the highest generation opened per bucket/key: an older
	// record is refused (rollback protection).
	genMu   sync.Mutex
	seenGen map[genKey]uint64

	// view is the watched connections: name → *connSlot. Reads take no
	// lock (the hot path of every request); a record loaded at start is
	// opened on its first use (connSlot).
	view sync.Map
	// openedOK counts the slots of the view whose record opened.
	openedOK atomic.Int64
	// loadedConns counts the connection records loaded at start.
	loadedConns atomic.Int64
	// load packs the records the connections watcher loads at start.
	load arena
	// own holds the connection writes under way through this worker, by
	// name (expectOwn).
	ownMu sync.Mutex
	own   map[string][]*ownWrite

	mu          sync.RWMutex
	exportsByNm map[string]events.Export
	// listeners is replaced, never changed in place, by OnChange (under
	// mu): notify reads it without a copy.
	listeners atomic.Pointer[[]func(Change)]

	// now is the clock of generations (nextGen); tests set another.
	now func() time.Time

	ready atomic.Bool
	// sealedOut holds the connection records this worker's master key
	// cannot open, and stopped the buckets whose watcher has stopped: either
	// makes the worker unhealthy.
	healthMu  sync.Mutex
	sealedOut map[string]error
	stopped   map[string]error
	// missing holds the buckets found deleted (checkBuckets).
	missing map[string]error
	cancel  context.CancelFunc
	// watchCtx is the watchers' context (Start), done once they stop.
	watchCtx context.Context
	wg       sync.WaitGroup
	// markers reads secrets' delete markers off the secrets watcher's
	// goroutine (secretApplied).
	markers *markerQueue

	// fault holds the tests' hooks (export_test.go); nil otherwise.
	fault *Faults
}

// Faults are points where a test makes the registry wait or fail
// (SetFaults, tests only; nil in production); a nil func or a zero value
// changes nothing.
type Faults struct {
	// SecretChecked runs once a secret put has checked its connection,
	// before it writes; SecretWritten once it has written, before keptFor.
	SecretChecked, SecretWritten func()
	// LastRevision replaces the read of the connections bucket's last
	// revision (keptInView).
	LastRevision func(ctx context.Context) (uint64, error)
	// ConnReread runs before keptFor reads the connection from the bucket;
	// an error fails that read.
	ConnReread func(ctx context.Context) error
	// OrphanPurge runs before keptFor's removal of a secret stored for a
	// connection deleted meanwhile; an error replaces that attempt's purge.
	OrphanPurge func() error
	// LeaderReads sends keptFor's reads and the deletes' reads (of the
	// record deleted, of a connection's secrets: storedSecrets, of a key
	// again after a conflict) to the stream's leader, as for a replicated
	// bucket (checkedGet), whatever its replicas.
	LeaderReads bool
	// ReclaimAfter, when above 0, replaces the const reclaimAfter, and
	// Reclaimed runs once Start's reclaim is done.
	ReclaimAfter int64
	Reclaimed    func()
	// CheckBucketsEvery, when above 0, replaces checkBucketsEvery.
	CheckBucketsEvery time.Duration
}

// bucket is one KV bucket and the last revision its watcher has applied.
type bucket struct {
	name string
	kv   jetstream.KeyValue

	// applyMu orders the changes to the view: the watcher holds it while it
	// applies an entry and marks its revision seen, a put while it adopts
	// its own write (adoptConnection).
	applyMu sync.Mutex
	// own holds revisions this worker wrote whose change it has already
	// acted on itself (a secret put invalidates this worker's cache before
	// it replies): the watcher applies them without notifying again, so a
	// late notification cannot drop what a request cached after the reply.
	// Guarded by applyMu; an entry is removed when the watcher reaches it.
	own map[uint64]struct{}

	mu   sync.Mutex
	seen uint64
	// wake is closed when seen moves, if a waitSeen made it (nil: none
	// waits, and the watcher makes no channel per entry).
	wake chan struct{}

	// stream is the bucket's stream, for reading a delete marker
	// (createKey); looked up on first use.
	streamMu sync.Mutex
	stream   jetstream.Stream

	// lastMu guards the bucket's reads of its last revision (lastRevision):
	// how many are in flight, and the next one, which the callers arriving
	// while maxLastReads are share.
	lastMu       sync.Mutex
	lastInFlight int
	lastNext     *lastRead

	// restart tells the bucket's watcher that the bucket was created again
	// (checkBuckets): it watches it again from its start (reload).
	restart chan struct{}
	// created is when the bucket's stream was created, and missing whether
	// it was found deleted: checkBuckets's own, set by Start before.
	created time.Time
	missing bool
}

// maxLastReads bounds a bucket's reads of its last revision in flight: past
// it, callers wait for one to answer and share the next. More than one in
// flight lets a caller's read start sooner than a round trip after its call
// (the wait is a put's latency), fewer than the callers lets them share.
const maxLastReads = 4

// lastRead is one read of a bucket's last revision, shared by its callers.
type lastRead struct {
	done chan struct{}
	rev  uint64
	err  error
}

// wroteOwn records that this worker wrote revision rev and handles its
// change itself. A revision the watcher has already applied is not kept.
func (b *bucket) wroteOwn(rev uint64) {
	b.applyMu.Lock()
	defer b.applyMu.Unlock()
	if b.lastSeen() >= rev {
		return
	}
	if b.own == nil {
		b.own = map[uint64]struct{}{}
	}
	b.own[rev] = struct{}{}
}

// takeOwn reports whether rev is one of this worker's own handled writes,
// forgetting it and any older one left (applyMu held).
func (b *bucket) takeOwn(rev uint64) bool {
	if len(b.own) == 0 {
		return false
	}
	_, ok := b.own[rev]
	for r := range b.own {
		if r <= rev {
			delete(b.own, r)
		}
	}
	return ok
}

func (b *bucket) lastSeen() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen
}

func (b *bucket) markSeen(rev uint64) {
	b.mu.Lock()
	if rev > b.seen {
		b.seen = rev
	}
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

// seenAtMost lowers the last revision seen to rev when it is above it (the
// bucket created again).
func (b *bucket) seenAtMost(rev uint64) {
	b.mu.Lock()
	if b.seen > rev {
		b.seen = rev
	}
	b.mu.Unlock()
}

// waitSeen waits until the watcher has applied revision rev, so this worker's
// own view includes a write it just made (false: it had not within 2 s, or
// before ctx ended).
func (b *bucket) waitSeen(ctx context.Context, rev uint64) bool {
	if b.lastSeen() >= rev {
		// The common case: no timer to make.
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		b.mu.Lock()
		seen := b.seen
		if seen < rev && b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		if seen >= rev {
			return true
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return false
		}
	}
}

// lastRevision reads the bucket's last revision (its stream's last
// sequence) from JetStream, by a request sent after the call began: every
// write stored before then is at or below it. Callers share the reads: while
// maxLastReads are in flight, those arriving wait for the next, sent once
// one has answered, so many concurrent callers cost a few requests per round
// trip between them, not one each. read is the request
// (Registry.lastConnsRevision for keptFor). A caller waits until ctx is done
// or deadline at the latest.
func (b *bucket) lastRevision(ctx context.Context, deadline time.Time, read func(context.Context) (uint64, error)) (uint64, error) {
	b.lastMu.Lock()
	if b.lastInFlight < maxLastReads {
		p := &lastRead{done: make(chan struct{})}
		b.lastInFlight++
		b.lastMu.Unlock()
		b.runLast(p, read)
		if time.Now().After(deadline) {
			return 0, context.DeadlineExceeded
		}
		return p.rev, p.err
	}
	p := b.lastNext
	if p == nil {
		p = &lastRead{done: make(chan struct{})}
		b.lastNext = p
	}
	b.lastMu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.done:
		return p.rev, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
		return 0, context.DeadlineExceeded
	}
}

// runLast makes read p, then starts the next one if callers wait for it.
// A read has a deadline of its own (keptForTimeout), not one of its
// callers'.
func (b *bucket) runLast(p *lastRead, read func(context.Context) (uint64, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), keptForTimeout)
	p.rev, p.err = read(ctx)
	cancel()
	b.lastMu.Lock()
	next := b.lastNext
	b.lastNext = nil
	if next == nil {
		b.lastInFlight--
	}
	b.lastMu.Unlock()
	close(p.done)
	if next != nil {
		// Its callers' writes were all done before now: it is sent after
		// them.
		go b.runLast(next, read)
	}
}

// lastSeq reads the last sequence of b's stream (its info).
func (b *bucket) lastSeq(ctx context.Context) (uint64, error) {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	si, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo })
	if !ok {
		return 0, errors.New("no stream info in the bucket's status")
	}
	return si.StreamInfo().State.LastSeq, nil
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
		exportsByNm: map[string]events.Export{},
		sealedOut:   map[string]error{}, stopped: map[string]error{}, missing: map[string]error{}, seenGen: map[genKey]uint64{}, now: time.Now}
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
		var kv jetstream.KeyValue
		// A cluster still forming, or a JetStream not ready yet, answers with
		// timeouts and 503s: start-up waits it out until ctx is done.
		err := bus.Retry(ctx, opts.Logger, "binding bucket "+name, func(ctx context.Context) error {
			var err error
			kv, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{Bucket: name, Description: b.desc,
				History: 1, Storage: jetstream.FileStorage, Replicas: opts.Replicas})
			return err
		})
		if err != nil {
			return nil, err
		}
		*b.dst = &bucket{name: name, kv: kv, restart: make(chan struct{}, 1)}
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

// OnChange registers fn to be called for every change: from the watcher
// goroutine, or from the goroutine of a put through this worker, which
// applies its own write at once (so fn may be called concurrently). Each
// change is notified once. Register before Start to see the initial state
// too.
func (r *Registry) OnChange(fn func(Change)) {
	r.mu.Lock()
	var ls []func(Change)
	if p := r.listeners.Load(); p != nil {
		ls = append(ls, *p...)
	}
	ls = append(ls, fn)
	r.listeners.Store(&ls)
	r.mu.Unlock()
}

// watched is one bucket's watcher: how to apply an entry (initial says it
// is part of the state loaded at start; the change to notify, if any), what
// to do once that state is loaded, and the watch options of a (re)start.
type watched struct {
	b     *bucket
	apply func(e jetstream.KeyValueEntry, initial bool) *Change
	// after, when set, is called with each entry once applied and the
	// change to notify (nil: none), outside the bucket's applyMu; true
	// when it took the change over (it notifies it itself, later).
	after  func(e jetstream.KeyValueEntry, c *Change) bool
	loaded func()
	opts   func(first bool) []jetstream.WatchOpt
	// updatesOnly: the first watch delivers no initial state (and no
	// end-of-state marker).
	updatesOnly bool
}

func allOpts(bool) []jetstream.WatchOpt { return nil }

// Start starts the watchers and returns once the current state is loaded.
//
// The connections and exports are loaded; connection records stay sealed
// until first used (connSlot). Built-in secrets are read from the bucket on
// each cache miss, so their watcher only follows changes (to invalidate
// cached values) from the start on: a worker starting has nothing cached.
func (r *Registry) Start(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.watchCtx = cancel, wctx
	r.markers = newMarkerQueue(markerQueueSize)
	r.wg.Add(1)
	go r.readMarkers(wctx)
	loaded := make(chan struct{}, 3)
	// Changes to secrets after the last one now are followed; a watcher
	// that restarts resumes after the last one it saw.
	if st, err := r.secrets.kv.Status(ctx); err == nil {
		if si, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo }); ok {
			r.secrets.markSeen(si.StreamInfo().State.LastSeq)
		}
	}
	for _, w := range []watched{
		{b: r.conns, apply: r.applyConnection, loaded: r.probeConnections, opts: allOpts},
		{b: r.exports, apply: r.applyExport, opts: allOpts},
		{b: r.secrets, apply: func(e jetstream.KeyValueEntry, _ bool) *Change { return r.applySecret(e) }, after: r.secretApplied, updatesOnly: true,
			opts: func(first bool) []jetstream.WatchOpt {
				if first {
					return []jetstream.WatchOpt{jetstream.MetaOnly(), jetstream.UpdatesOnly()}
				}
				return []jetstream.WatchOpt{jetstream.MetaOnly(), jetstream.ResumeFromRevision(r.secrets.lastSeen() + 1)}
			}},
	} {
		var kw jetstream.KeyWatcher
		err := bus.Retry(ctx, r.log, "watching bucket "+w.b.name, func(context.Context) error {
			var err error
			kw, err = w.b.kv.WatchAll(wctx, w.opts(true)...)
			return err
		})
		if err != nil {
			cancel()
			return fmt.Errorf("watching bucket %s: %w", w.b.name, err)
		}
		if w.updatesOnly {
			loaded <- struct{}{}
		}
		r.wg.Add(1)
		go r.watch(wctx, kw, w, loaded)
	}
	for i := 0; i < 3; i++ {
		select {
		case <-loaded:
		case <-ctx.Done():
			cancel()
			return fmt.Errorf("loading registry: %w", ctx.Err())
		}
	}
	for _, b := range []*bucket{r.conns, r.secrets, r.exports} {
		if st, err := b.kv.Status(ctx); err == nil {
			if si, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo }); ok {
				b.created = si.StreamInfo().Created
			}
		}
	}
	every := checkBucketsEvery
	if r.fault != nil && r.fault.CheckBucketsEvery > 0 {
		every = r.fault.CheckBucketsEvery
	}
	r.wg.Add(1)
	go r.checkBuckets(wctx, every)
	r.ready.Store(true)
	after, done := int64(reclaimAfter), func() {}
	if r.fault != nil && r.fault.ReclaimAfter > 0 {
		after, done = r.fault.ReclaimAfter, r.fault.Reclaimed
	}
	if r.loadedConns.Load() >= after {
		// The load's garbage (see reclaimAfter) is returned once, off the
		// caller's path, and a while after it, so that the collection does
		// not compete with the worker's start (its first requests).
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			select {
			case <-wctx.Done():
				return
			case <-time.After(reclaimDelay):
			}
			debug.FreeOSMemory()
			done()
		}()
	}
	return nil
}

// reclaimDelay is how long after Start the load's garbage is reclaimed.
const reclaimDelay = time.Second

// reclaimAfter is the number of connection records loaded at start past
// which Start returns the load's garbage to the operating system once
// (debug.FreeOSMemory, a garbage collection then a release of the free
// heap). The records are copied out of the watch's messages (arena), so the
// messages, their headers and entries are garbage once applied; but the heap
// goal the load leaves was set by a collection during it, when more was live
// (messages waiting in the watch's subscription, entries being applied), so
// that garbage stays in the heap, and the process's memory, until the heap
// reaches a goal well above what the worker holds: in the registry
// benchmark at 100,000 connections, after a restart, 96 MiB of heap in use,
// 15 MiB free and kept, and a goal of 149 MiB, against a goal of 102 MiB for
// the worker that holds the same connections loaded through its puts. The
// collection resets the goal from what the worker holds. A smaller load
// leaves too little to matter.
const reclaimAfter = 10000

func (r *Registry) watch(ctx context.Context, kw jetstream.KeyWatcher, w watched, loaded chan<- struct{}) {
	defer r.wg.Done()
	b := w.b
	initial := !w.updatesOnly
	// reloading: the bucket was created again and is being loaded anew; the
	// worker is unhealthy until that state is loaded (its end marker).
	reloading := false
	for {
		recreated := r.follow(ctx, kw, w, &initial, loaded, &reloading)
		_ = kw.Stop()
		if ctx.Err() != nil {
			return
		}
		if recreated {
			// The watcher's consumer would resume past the new stream's
			// sequences: the view is rebuilt from the bucket's start, as a
			// worker starting would load it.
			r.setStopped(b.name, errors.New("its bucket was created again; reloading it"))
			r.reload(w)
		} else {
			// The watcher stopped on its own: the worker is unhealthy (its
			// view no longer follows the bucket) until a new one runs.
			r.setStopped(b.name, errors.New("its watcher stopped"))
			r.log.Error().Str("bucket", b.name).Msg("registry watcher stopped; watching again")
		}
		for {
			err := bus.Retry(ctx, r.log, "re-watching bucket "+b.name, func(context.Context) error {
				// A bucket deleted and created again starts its
				// revisions over: the revisions seen are forgotten
				// down to its last (the secrets' watcher resumes
				// after it, and waits for revisions are not
				// answered by revisions of the bucket deleted).
				last, err := b.lastSeq(ctx)
				if err != nil {
					return err
				}
				b.seenAtMost(last)
				kw, err = b.kv.WatchAll(ctx, w.opts(false)...)
				return err
			})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			// Even an error retrying cannot cure (the bucket deleted) may be
			// cured by an operator: keep trying, slowly.
			r.log.Error().Err(err).Str("bucket", b.name).Msg("cannot watch bucket; trying again in 5s")
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
		if recreated && !w.updatesOnly {
			// Healthy again once the new bucket's state is loaded (follow).
			reloading = true
			continue
		}
		r.setStopped(b.name, nil)
	}
}

// reload empties what the view holds of w's bucket, created again, before
// it is watched from its start: a record of the bucket deleted is no longer
// in force, and the new bucket's revisions start over (its records are
// applied as new ones). The generations of the records dropped are
// remembered, as for a delete. The secrets' watcher follows from the new
// bucket's first revision (secrets are read from the bucket, not held).
func (r *Registry) reload(w watched) {
	b := w.b
	var gone []Change
	b.applyMu.Lock()
	b.own = nil
	switch b {
	case r.conns:
		r.view.Range(func(k, v any) bool {
			name, old := k.(string), v.(*connSlot)
			if oo := r.open(old); oo.err == nil {
				r.remember(r.conns.name, name, oo.gen)
			}
			r.view.Delete(name)
			r.dropped(old)
			r.setSealedOut(name, nil)
			gone = append(gone, Change{Kind: KindConnection, Name: name, Deleted: true})
			return true
		})
	case r.secrets:
		gone = append(gone, Change{Kind: KindSecret, Deleted: true})
	case r.exports:
		r.mu.Lock()
		for name := range r.exportsByNm {
			delete(r.exportsByNm, name)
			gone = append(gone, Change{Kind: KindExport, Name: name, Deleted: true})
		}
		r.mu.Unlock()
	}
	b.seenAtMost(0)
	b.applyMu.Unlock()
	for _, c := range gone {
		r.notify(c)
	}
}

// follow applies the watcher's updates until it stops or ctx is done; true
// when it stopped because the bucket was created again (bucket.restart).
// Once the state of a reload is loaded, the bucket is healthy again.
func (r *Registry) follow(ctx context.Context, kw jetstream.KeyWatcher, w watched, initial *bool, loaded chan<- struct{}, reloading *bool) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-w.b.restart:
			return true
		case e, ok := <-kw.Updates():
			if !ok {
				return false
			}
			if e == nil {
				if *initial {
					*initial = false
					if w.loaded != nil {
						w.loaded()
					}
					loaded <- struct{}{}
				}
				if *reloading {
					*reloading = false
					if w.loaded != nil {
						w.loaded()
					}
					r.setStopped(w.b.name, nil)
				}
				continue
			}
			w.b.applyMu.Lock()
			c := w.apply(e, *initial)
			w.b.markSeen(e.Revision())
			if w.b.takeOwn(e.Revision()) {
				c = nil
			}
			w.b.applyMu.Unlock()
			if w.after != nil && w.after(e, c) {
				continue
			}
			if c != nil {
				r.notify(*c)
			}
		}
	}
}

// checkBucketsEvery is how often each bucket's stream is checked for having
// been deleted or created again (one stream info per bucket).
const checkBucketsEvery = 5 * time.Second

// checkBuckets finds the buckets deleted or created again while the worker
// runs, every so often, until ctx is done. A watcher does not see it: its consumer, created
// again with the stream, resumes after the last sequence it delivered, past
// the new stream's, and so would follow nothing. A bucket missing makes the
// worker unhealthy; one created again is reloaded by its watcher (reload),
// logged once and counted.
func (r *Registry) checkBuckets(ctx context.Context, every time.Duration) {
	defer r.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, b := range []*bucket{r.conns, r.secrets, r.exports} {
			r.checkBucket(ctx, b)
		}
	}
}

func (r *Registry) checkBucket(ctx context.Context, b *bucket) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := b.kv.Status(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) && !b.missing {
			b.missing = true
			r.setMissing(b.name, errors.New("missing (deleted)"))
			r.log.Error().Err(err).Str("bucket", b.name).Msg("registry bucket missing; not ready until it is created again")
		}
		// Anything else (NATS away, a timeout) is the watcher's and the
		// connection's to report: checked again next time.
		return
	}
	si, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo })
	if !ok {
		return
	}
	created := si.StreamInfo().Created
	if !created.Equal(b.created) {
		// Unhealthy from now until the watcher has reloaded it.
		r.setStopped(b.name, errors.New("its bucket was created again; reloading it"))
	}
	if b.missing {
		b.missing = false
		r.setMissing(b.name, nil)
	}
	if created.Equal(b.created) {
		return
	}
	b.created = created
	r.log.Warn().Str("bucket", b.name).Msg("registry bucket created again; reloading it")
	metrics.RegistryBucketRecreated.WithLabelValues(b.name).Inc()
	select {
	case b.restart <- struct{}{}:
	default:
	}
}

func (r *Registry) setStopped(bucket string, err error) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	if err == nil {
		delete(r.stopped, bucket)
		return
	}
	r.stopped[bucket] = err
}

func (r *Registry) setMissing(bucket string, err error) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	if err == nil {
		delete(r.missing, bucket)
		return
	}
	r.missing[bucket] = err
}

// setSealedOut records whether connection name's record could be opened.
func (r *Registry) setSealedOut(name string, err error) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	// Only a record under a key this worker lacks says the worker's keys are
	// wrong; a tampered one (seal.ErrOpen) is refused at use and left for an
	// admin to put again or delete, which needs the admin endpoints up.
	if err == nil || !errors.Is(err, seal.ErrUnknownKey) {
		delete(r.sealedOut, name)
		return
	}
	r.sealedOut[name] = err
}

// Health says why the registry cannot serve, or nil: a watcher that stopped,
// or stored connection records under a master key this worker lacks while
// it opens none of them. The reasons name
// buckets and records, never their content.
func (r *Registry) Health() error {
	if !r.ready.Load() {
		return errors.New("registry buckets not ready")
	}
	r.healthMu.Lock()
	unreadable := len(r.sealedOut)
	r.healthMu.Unlock()
	if unreadable > 0 && r.openedOK.Load() == 0 {
		// The records opened so far are all unreadable (or the readable
		// ones were deleted): open sealed ones until one opens, if any.
		r.probeConnections()
	}
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	for name, err := range r.stopped {
		return fmt.Errorf("bucket %s: %v", name, err)
	}
	for name, err := range r.missing {
		return fmt.Errorf("bucket %s: %v", name, err)
	}
	opened := r.openedOK.Load()
	// Unhealthy when the master key opens none of the stored connections:
	// a worker started with the wrong key. A few records under an unknown
	// key among readable ones (written by a misconfigured worker) are
	// refused at use, and an admin may replace or delete them.
	if n := len(r.sealedOut); n > 0 && opened == 0 {
		var one string
		for name := range r.sealedOut {
			if one == "" || name < one {
				one = name
			}
		}
		return fmt.Errorf("the master key cannot open %d stored connection record(s), e.g. %q: %s", n, one, unreadableWhy(r.sealedOut[one]))
	}
	return nil
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
	p := r.listeners.Load()
	if p == nil {
		return
	}
	for _, fn := range *p {
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
