package resolve

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// A bulkhead bounds one connection's upstream work in this worker, so a slow
// or hanging provider costs its own connection only: at most
// max_concurrent+max_queue requests needing the provider are admitted (past
// that they fail at once with throttled), and at most max_concurrent provider
// calls run at a time. Cache hits are answered before any of it.
type bulkhead struct {
	conn   string
	limits events.Limits
	admit  *endpoint.Limiter
	run    chan struct{}
	// wait bounds the wait for a slot: a request gives up at its deadline,
	// and the call made on its behalf must not outlive it in the queue.
	wait time.Duration
	// rendered is the throttled error of the bulkhead's connection, its
	// reply rendered once: a flood gets it many times.
	rendered error
}

func newBulkhead(conn string, l events.Limits, wait time.Duration) *bulkhead {
	b := &bulkhead{conn: conn, limits: l, admit: endpoint.NewLimiter(l.MaxConcurrent + l.MaxQueue),
		run: make(chan struct{}, l.MaxConcurrent), wait: wait}
	b.rendered = endpoint.Rendered(b.throttledErr(conn))
	return b
}

// throttled is the error of a request to conn past the bound.
func (b *bulkhead) throttled(conn string) error {
	if conn == b.conn {
		return b.rendered
	}
	return b.throttledErr(conn) // the bulkhead shared by unknown connections
}

func (b *bulkhead) throttledErr(conn string) *events.Error {
	return events.Errorf(events.CodeThrottled,
		"connection %q is at its limit in this worker (%d provider calls running and %d waiting: limits.max_concurrent, limits.max_queue); try again later",
		conn, b.limits.MaxConcurrent, b.limits.MaxQueue)
}

// acquire waits for a provider call slot, at most until ctx is done or the
// bulkhead's wait has passed.
func (b *bulkhead) acquire(ctx context.Context) (func(), error) {
	select {
	case b.run <- struct{}{}:
		return func() { <-b.run }, nil
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	select {
	case b.run <- struct{}{}:
		return func() { <-b.run }, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, events.Errorf(events.CodeTimeout, "connection %q: no provider call slot was free before the request deadline (limits.max_concurrent %d)", b.conn, b.limits.MaxConcurrent)
		}
		return nil, ctx.Err()
	}
}

// unknownConn keys the bulkhead shared by requests naming a connection this
// worker's view does not hold (yet): they read the bucket to find out.
const unknownConn = "\x00unknown"

// bulkheadFor returns the bulkhead of connection name, made from its limits.
func (w *Worker) bulkheadFor(name string) *bulkhead {
	c, ok := w.cfg.Connections.Connection(name)
	key, limits := name, c.UpstreamLimits()
	if !ok {
		key = unknownConn
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.bulkheads[key]
	if b == nil || b.limits != limits {
		b = newBulkhead(key, limits, w.queueWait)
		w.bulkheads[key] = b
	}
	return b
}

// laneOf is a request's lane: its connection, when this worker's view holds
// it, else the lane shared by the others (they read the bucket to find out);
// a subject that is not op's is the shared lane's, with its error. It runs
// on the subscription's goroutine, so it opens no sealed record
// (HasConnection): the lane's stage does.
func (w *Worker) laneOf(op string) endpoint.LaneFunc {
	return func(req micro.Request, f *endpoint.Fields) (string, error) {
		group, name, err := w.cfg.Subjects.ParseOp(op, req.Subject())
		if err != nil {
			return "", err
		}
		f.Group, f.Conn = group, name
		if !w.cfg.Connections.HasConnection(name) {
			return "", nil
		}
		return name, nil
	}
}

// laneFull is the throttled error of a request finding its connection's lane
// full.
func (w *Worker) laneFull(op string) endpoint.LaneFull {
	return func(lane string) error {
		if lane == "" {
			return events.Errorf(events.CodeThrottled, "too many %s requests to unknown connections in this worker; try again later", op)
		}
		return events.Errorf(events.CodeThrottled, "connection %q is at its limit in this worker (%d requests waiting to be admitted); try again later", lane, endpoint.LaneDepth)
	}
}

// stage handles a request on its connection's lane: a bad body fails at
// once; a resolve the cache answers is answered (the body decoded here, and
// remembered for the inline path); anything else needing the provider is
// admitted to the connection's bulkhead, or fails at once with throttled.
func (w *Worker) stage(op string) endpoint.StageFunc {
	return func(req micro.Request, f *endpoint.Fields) ([]byte, func(), error) {
		// laneOf parsed the subject (a wrong one is replied with its
		// error without coming here).
		group, name := f.Group, f.Conn
		if op == events.OpResolve {
			m := w.fast.known(req.Subject(), req.Data())
			known := m != nil
			if !known {
				in, ok := plainResolve(req.Data())
				if !ok {
					if err := events.Decode(req.Data(), &in); err != nil {
						return nil, nil, err
					}
					if err := in.Validate(); err != nil {
						return nil, nil, err
					}
				}
				m = w.fast.newMemo(req.Subject(), req.Data(), group, name, in, w.cfg.Cache.Ref(name, in.Secret, in.Version))
			}
			if body, ok := w.hit(req, f, m); ok {
				if !known {
					w.fast.remember(m)
				}
				return body, nil, nil
			}
			// A throttled resolve's audit event names what was asked.
			f.Audit = endpoint.AuditFields{Secret: m.in.Secret, Version: m.in.Version}
		} else if err := checkBody(op, req.Data()); err != nil {
			return nil, nil, err
		}
		b := w.bulkheadFor(name)
		release, ok := b.admit.Enter()
		if !ok {
			return nil, nil, b.throttled(name)
		}
		return nil, release, nil
	}
}

// limited is a connection's provider behind its bulkhead: every call to the
// provider holds one of the connection's max_concurrent slots.
type limited struct {
	b    *bulkhead
	next provider.Resolver
}

func (l *limited) Resolve(ctx context.Context, req provider.Request) (provider.Secret, error) {
	release, err := l.b.acquire(ctx)
	if err != nil {
		return provider.Secret{}, err
	}
	defer release()
	return l.next.Resolve(ctx, req)
}

// limitedChecker is limited for a provider with a cheap version check.
type limitedChecker struct {
	*limited
	vc provider.VersionChecker
}

func (l limitedChecker) CurrentVersion(ctx context.Context, req provider.Request) (string, error) {
	release, err := l.b.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return l.vc.CurrentVersion(ctx, req)
}

func limit(b *bulkhead, next provider.Resolver) provider.Resolver {
	l := &limited{b: b, next: next}
	if vc, ok := next.(provider.VersionChecker); ok {
		return limitedChecker{limited: l, vc: vc}
	}
	return l
}

// checkBody decodes and validates a request body of op other than resolve
// (stage reads a resolve's body itself, with its memo and plain reader).
func checkBody(op string, body []byte) error {
	var in request
	switch op {
	case events.OpTest:
		in = &events.TestRequest{}
	case events.OpToken:
		in = &events.TokenRequest{}
	default:
		return nil
	}
	if err := events.Decode(body, in); err != nil {
		return err
	}
	return in.Validate()
}

// plainResolve reads the plainest resolve body, {"secret":"NAME"} with NAME
// of printable ASCII other than a quote or backslash (what a flood of
// distinct secrets sends), without the strict decoder's cost: what it
// accepts, events.Decode reads the same (one object, one known field, no
// escapes, nothing after) and Validate accepts. Anything else is left to
// events.Decode and Validate (ok false).
func plainResolve(body []byte) (events.ResolveRequest, bool) {
	const prefix, suffix = `{"secret":"`, `"}`
	if len(body) <= len(prefix)+len(suffix) || len(body) > maxMemoBody ||
		string(body[:len(prefix)]) != prefix || string(body[len(body)-len(suffix):]) != suffix {
		return events.ResolveRequest{}, false
	}
	name := body[len(prefix) : len(body)-len(suffix)]
	for _, c := range name {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return events.ResolveRequest{}, false
		}
	}
	in := events.ResolveRequest{Secret: string(name)}
	// Validated exactly as the strict path validates (a space, '*' or '>'
	// in the name is bad_request): an invalid body is declined, and the
	// strict path replies with its error, before any admission.
	if in.Validate() != nil {
		return events.ResolveRequest{}, false
	}
	return in, true
}
