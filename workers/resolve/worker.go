// Package resolve is the worker behind resolve, test, token and invalidate:
// it authorizes a request against the connection, then asks the connection's
// provider through the cache, and shapes the reply.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/cache"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// Connections is what the worker needs of the registry: a fast watched view
// (HasConnection answers without opening a sealed record, for the lane
// pick), and a read-through to confirm a negative answer.
type Connections interface {
	Connection(name string) (events.Connection, bool)
	HasConnection(name string) bool
	LookupConnection(ctx context.Context, name string) (events.Connection, error)
}

// Config configures a Worker.
type Config struct {
	Subjects    events.Subjects
	Connections Connections
	Cache       *cache.Store
	// Factories build a connection's provider, by provider name.
	Factories map[string]provider.Factory
	Runner    *endpoint.Runner
	Logger    zerolog.Logger
	// Fingerprint computes the audit fingerprint of a served value (nil: none).
	Fingerprint func(value []byte) string
	// Endpoints, when set, refuses a stored connection whose endpoints fall
	// outside the allowlist before its provider is built (forbidden).
	Endpoints EndpointChecker
	// Events, when set, is the health of this worker's change-event
	// consumers, reported by conn test's events step (test.go).
	Events EventHealth
}

// EndpointChecker checks where a stored connection sends credentials
// (provider.Table.CheckStored).
type EndpointChecker interface {
	CheckStored(c *events.Connection) error
}

// Worker serves resolve, test, token and invalidate.
type Worker struct {
	cfg Config
	mu  sync.Mutex
	// built holds each connection's provider, built on first use and dropped
	// when the connection changes.
	built map[string]*built
	// epochs counts each connection's changes while a build of its
	// provider is under way (building): a provider whose build began under
	// an older epoch is closed, never kept. Without a build under way a
	// connection has no entry in either, so they do not grow with changes.
	epochs   map[string]uint64
	building map[string]int
	sf       singleflight.Group
	fast     *fastPath
	// bulkheads bound each connection's upstream work.
	bulkheads map[string]*bulkhead
	queueWait time.Duration
}

type built struct {
	conn events.Connection
	raw  provider.Resolver
	// cached is raw behind the connection's bulkhead and the cache.
	cached   provider.Resolver
	bulkhead *bulkhead
}

// New returns a worker.
func New(cfg Config) *Worker {
	wait := 8 * time.Second
	if cfg.Runner != nil {
		wait = cfg.Runner.Timeout()
	}
	if cfg.Fingerprint == nil {
		cfg.Fingerprint = func([]byte) string { return "" }
	}
	return &Worker{cfg: cfg, built: map[string]*built{}, epochs: map[string]uint64{}, building: map[string]int{}, fast: newFastPath(),
		bulkheads: map[string]*bulkhead{}, queueWait: wait}
}

// Register adds the worker's endpoints to the service.
func (w *Worker) Register(svc *srv.Service) error {
	s, r := w.cfg.Subjects, w.cfg.Runner
	for _, ep := range []struct {
		name    string
		subject string
		handler micro.Handler
		opts    []srv.EndpointOpt
	}{
		{"resolve", s.OpWildcard(events.OpResolve), w.dispatched(events.OpResolve, w.fastResolve, w.handleResolve), nil},
		{"test", s.OpWildcard(events.OpTest), w.dispatched(events.OpTest, nil, w.handleTest), nil},
		{"token", s.OpWildcard(events.OpToken), w.dispatched(events.OpToken, nil, w.handleToken), nil},
		{"invalidate", s.Invalidate(), r.Inline("invalidate", w.handleInvalidate), []srv.EndpointOpt{srv.WithQueueGroupDisabled()}},
		{"admin-audit-fingerprint", s.AdminAuditFingerprint(), r.Handler("admin-audit-fingerprint", w.handleFingerprint), nil},
	} {
		opts := append([]srv.EndpointOpt{srv.WithSubject(ep.subject)}, ep.opts...)
		if err := svc.AddEndpoint(ep.name, ep.handler, opts...); err != nil {
			return fmt.Errorf("adding endpoint %s: %w", ep.name, err)
		}
	}
	return nil
}

// dispatched is op's handler: cache hits inline, everything else through its
// connection's lane and bulkhead.
func (w *Worker) dispatched(op string, fast endpoint.FastFunc, fn endpoint.Func) micro.Handler {
	return w.cfg.Runner.Dispatched(op, fast, w.laneOf(op), w.stage(op), w.laneFull(op), fn)
}

// ConnectionChanged drops the connection's provider and cache entries; the
// next request builds them anew from the changed connection.
func (w *Worker) ConnectionChanged(name string) {
	w.mu.Lock()
	b := w.built[name]
	delete(w.built, name)
	delete(w.bulkheads, name)
	if w.building[name] > 0 {
		w.epochs[name]++
	}
	w.mu.Unlock()
	w.cfg.Cache.Invalidate(name, "")
	w.fast.forget(name)
	if b != nil {
		closeProvider(b.raw)
	}
}

// SecretChanged drops the cache entries of one secret.
func (w *Worker) SecretChanged(conn, secret string) { w.cfg.Cache.Invalidate(conn, secret) }

// SecretsChanged drops the cache entries of every connection match accepts.
func (w *Worker) SecretsChanged(match func(conn string) bool) { w.cfg.Cache.InvalidateConns(match) }

// Close releases every provider.
func (w *Worker) Close() {
	w.mu.Lock()
	all := w.built
	w.built = map[string]*built{}
	w.mu.Unlock()
	for _, b := range all {
		closeProvider(b.raw)
	}
}

func closeProvider(r provider.Resolver) {
	if c, ok := r.(provider.Closer); ok {
		_ = c.Close()
	}
}

// request is a request body that can check itself.
type request interface {
	Validate() error
}

// accept reads a request on connection subject op.<group>.<conn>: it parses
// the subject, decodes and validates the body into in, and authorizes the
// group on the connection.
func (w *Worker) accept(ctx context.Context, op string, req micro.Request, f *endpoint.Fields, in request) (events.Connection, error) {
	group, name, err := w.cfg.Subjects.ParseOp(op, req.Subject())
	if err != nil {
		return events.Connection{}, err
	}
	f.Group, f.Conn = group, name
	if err := events.Decode(req.Data(), in); err != nil {
		return events.Connection{}, err
	}
	if err := in.Validate(); err != nil {
		return events.Connection{}, err
	}
	c, err := w.authorize(ctx, group, name)
	if err != nil {
		return c, err
	}
	if c.RequireSealed && !sealedRequest(req) {
		return events.Connection{}, events.Errorf(events.CodeForbidden,
			"connection %q requires sealed replies: send your public curve key in header %s", name, events.HeaderReplyKey)
	}
	return c, nil
}

// sealedRequest reports whether the requester asked for a sealed reply.
func sealedRequest(req micro.Request) bool {
	h := req.Headers()
	return h != nil && h.Get(events.HeaderReplyKey) != ""
}

// authorize finds the connection and checks the group may use it. A negative
// answer from the watched view is confirmed against the bucket, so a change
// made a moment ago through another worker is already in force.
func (w *Worker) authorize(ctx context.Context, group, name string) (events.Connection, error) {
	c, ok := w.cfg.Connections.Connection(name)
	if ok && c.AllowsGroup(group) {
		return c, nil
	}
	c, err := w.cfg.Connections.LookupConnection(ctx, name)
	if errors.Is(err, events.ErrNotFound) {
		return events.Connection{}, events.Errorf(events.CodeNotFound, "connection %q: not found", name)
	}
	if err != nil {
		return events.Connection{}, err
	}
	if !c.AllowsGroup(group) {
		return events.Connection{}, events.Errorf(events.CodeForbidden, "group %q may not use connection %q", group, name)
	}
	return c, nil
}

func checkSecretAllowed(c events.Connection, secret string) error {
	if !c.AllowsSecret(secret) {
		return events.Errorf(events.CodeForbidden, "secret %q is outside the allowlist of connection %q", events.Clip(secret, events.QuoteMax), c.Name)
	}
	return nil
}

// provider returns the connection's provider, building it once. A build
// that raced with a change of the connection is thrown away and made again
// from the changed connection, so no provider of an old connection is kept.
func (w *Worker) provider(ctx context.Context, c events.Connection) (*built, error) {
	for attempt := 0; ; attempt++ {
		w.mu.Lock()
		b, ok := w.built[c.Name]
		epoch := w.epochs[c.Name]
		if !ok {
			w.building[c.Name]++
		}
		w.mu.Unlock()
		if ok {
			return b, nil
		}
		var err error
		if w.cfg.Endpoints != nil {
			if err = w.cfg.Endpoints.CheckStored(&c); err != nil {
				w.cfg.Logger.Warn().Str("conn", c.Name).Err(err).Msg("refusing a stored connection outside the endpoint allowlist")
			}
		}
		if err == nil {
			b, err = w.build(ctx, c, epoch)
		}
		w.mu.Lock()
		if w.building[c.Name]--; w.building[c.Name] <= 0 {
			delete(w.building, c.Name)
			delete(w.epochs, c.Name)
		}
		w.mu.Unlock()
		if err == nil || !errors.Is(err, errChanged) {
			return b, err
		}
		if attempt >= 3 || ctx.Err() != nil {
			return nil, events.Errorf(events.CodeUnavailable, "connection %q keeps changing; try again", c.Name)
		}
		current, ok := w.cfg.Connections.Connection(c.Name)
		if !ok {
			return nil, events.Errorf(events.CodeNotFound, "connection %q: not found", c.Name)
		}
		c = current
	}
}

// errChanged says the connection changed while its provider was built.
var errChanged = errors.New("connection changed during provider build")

// build makes the provider of c under epoch, one build per connection and
// epoch at a time.
func (w *Worker) build(ctx context.Context, c events.Connection, epoch uint64) (*built, error) {
	v, err, _ := w.sf.Do(c.Name+"\x00"+strconv.FormatUint(epoch, 10), func() (any, error) {
		w.mu.Lock()
		if b, ok := w.built[c.Name]; ok && w.epochs[c.Name] == epoch {
			w.mu.Unlock()
			return b, nil
		}
		w.mu.Unlock()
		factory := w.cfg.Factories[c.Provider]
		if factory == nil {
			return nil, events.Errorf(events.CodeUnavailable, "connection %q: provider %s is not available in this worker", c.Name, c.Provider)
		}
		raw, err := factory(context.WithoutCancel(ctx), c)
		if err != nil {
			return nil, fmt.Errorf("connection %q: setting up provider: %w", c.Name, err)
		}
		nb := &built{conn: c, raw: raw, bulkhead: w.bulkheadFor(c.Name)}
		nb.cached = w.cfg.Cache.Wrap(c.Name, cache.Policy{TTL: c.TTL(), MaxStale: c.MaxStale()}, limit(nb.bulkhead, raw))
		w.mu.Lock()
		if w.epochs[c.Name] != epoch {
			w.mu.Unlock()
			closeProvider(raw)
			return nil, errChanged
		}
		w.built[c.Name] = nb
		w.mu.Unlock()
		return nb, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*built), nil
}
