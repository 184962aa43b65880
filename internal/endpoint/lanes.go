package endpoint

import (
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
)

// Lanes keep one connection's flood from delaying another's requests on the
// endpoint's one subscription. The subscription's goroutine does only what
// costs next to nothing: it answers a cache hit from memos (no decoding) and
// hands everything else, without blocking, to the lane of the request's
// connection. Each lane has a goroutine of its own and a bounded queue; a
// request finding its lane's queue full fails at once with throttled. So a
// flood of requests to one connection queues in that connection's lane only,
// and the subscription goroutine is free for the next request whatever the
// flood does.

// LaneFunc names a request's lane, on the subscription's goroutine and
// cheaply (from its subject). "" is the lane shared by requests that name no
// known connection.
type LaneFunc func(req micro.Request) string

// StageFunc handles a request on its lane's goroutine, without blocking: it
// answers it (reply, e.g. a cache hit that needed decoding), fails it (err,
// e.g. a bad body or throttled past the connection's bound), or admits it to
// run on a goroutine of its own (release, called when it is done).
type StageFunc func(req micro.Request, f *Fields) (reply []byte, release func(), err error)

// LaneFull is the error of a request finding its lane's queue full.
type LaneFull func(lane string) error

// LaneDepth bounds each lane's queue.
const LaneDepth = 1024

// laneIdle is how long an empty lane waits before its goroutine ends.
const laneIdle = 30 * time.Second

type laneItem struct {
	req   micro.Request
	start time.Time
}

type lane struct {
	ch chan laneItem
}

// lanes are an endpoint's lanes by name.
type lanes struct {
	mu sync.Mutex
	m  map[string]*lane
}

// Dispatched adapts fast, lane, stage and fn to a micro handler: fast (when
// not nil) answers what it can inline, behind no queue; the rest goes to its
// lane (full: full's error at once), where stage answers, fails or admits it;
// an admitted request runs fn on a goroutine of its own, under the deadline.
// Every request's deadline runs from its arrival.
func (r *Runner) Dispatched(name string, fast FastFunc, laneOf LaneFunc, stage StageFunc, full LaneFull, fn Func) micro.Handler {
	ls := &lanes{m: map[string]*lane{}}
	return micro.HandlerFunc(func(req micro.Request) {
		start := arrival(req)
		if r.RefuseReplyKey(name, req, start) {
			return
		}
		if fast != nil {
			var f Fields
			if body, done := fast(req, &f); done {
				r.finish(name, req, &f, start, body, nil)
				return
			}
		}
		key := laneOf(req)
		r.wg.Add(1)
		if !r.enqueue(name, ls, key, laneItem{req: req, start: start}, stage, fn) {
			r.wg.Done()
			var f Fields
			r.finish(name, req, &f, start, nil, full(key))
		}
	})
}

// enqueue hands it to lane key without blocking, starting the lane's
// goroutine when it has none; false when the lane's queue is full.
func (r *Runner) enqueue(name string, ls *lanes, key string, it laneItem, stage StageFunc, fn Func) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.m[key]
	if l == nil {
		l = &lane{ch: make(chan laneItem, LaneDepth)}
		ls.m[key] = l
		go r.runLane(name, ls, key, l, stage, fn)
	}
	select {
	case l.ch <- it:
		return true
	default:
		return false
	}
}

// runLane handles lane l's requests in order, until it has been empty for
// laneIdle. Items are sent under ls.mu, so a lane removed while empty has
// lost nothing.
func (r *Runner) runLane(name string, ls *lanes, key string, l *lane, stage StageFunc, fn Func) {
	idle := time.NewTimer(laneIdle)
	defer idle.Stop()
	for {
		select {
		case it := <-l.ch:
			r.stage(name, it, stage, fn)
			r.wg.Done()
			// A lane working through a flood gives up its processor
			// between requests, so the subscription goroutines (and the
			// NATS read loop) never wait behind a whole burst of it.
			runtime.Gosched()
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(laneIdle)
		case <-idle.C:
			ls.mu.Lock()
			if len(l.ch) == 0 {
				delete(ls.m, key)
				ls.mu.Unlock()
				return
			}
			ls.mu.Unlock()
			idle.Reset(laneIdle)
		}
	}
}

// stage runs one request's stage on its lane; an admitted request goes on to
// a goroutine of its own.
func (r *Runner) stage(name string, it laneItem, stage StageFunc, fn Func) {
	var f Fields
	reply, release, err := r.callStage(stage, it.req, &f)
	if release != nil && (err != nil || reply != nil) {
		release() // answered here: nothing holds the admission
	}
	switch {
	case err != nil:
		r.finish(name, it.req, &f, it.start, nil, err)
	case reply != nil:
		r.finish(name, it.req, &f, it.start, reply, nil)
	default:
		r.wg.Add(1)
		go func() {
			defer func() { release(); r.wg.Done() }()
			r.run(name, fn, it.req, it.start)
		}()
	}
}

// callStage runs stage with a recovered panic turned into an internal error.
func (r *Runner) callStage(stage StageFunc, req micro.Request, f *Fields) (reply []byte, release func(), err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error().Str("subject", req.Subject()).Str("panic", typeOf(p)).Msg("recovered panic in request stage")
			reply, release, err = nil, nil, events.ErrInternal
		}
	}()
	reply, release, err = stage(req, f)
	if err == nil && reply == nil && release == nil {
		release = func() {}
	}
	return reply, release, err
}
