package endpoint

import (
	"runtime"
	"sync"
	"sync/atomic"
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
// cheaply (from its subject), and fills in the fields it learned (the
// request's group and connection, for the log and audit event of a request
// its full lane refuses). "" is the lane shared by requests that name no
// known connection. A non-nil err (a subject that is not one of the
// endpoint's) is the request's error: its lane's goroutine replies with it
// without calling the stage (which need not find it out again).
type LaneFunc func(req micro.Request, f *Fields) (lane string, err error)

// StageFunc handles a request on its lane's goroutine, without blocking (f
// holds what the LaneFunc filled in): it
// answers it (reply, e.g. a cache hit that needed decoding), fails it (err,
// e.g. a bad body or throttled past the connection's bound), or admits it to
// run on a goroutine of its own (release, called when it is done).
type StageFunc func(req micro.Request, f *Fields) (reply []byte, release func(), err error)

// LaneFull is the error of a request finding its lane's queue full. It is
// called once per lane, and its reply rendered once (Rendered).
type LaneFull func(lane string) error

// LaneDepth bounds each lane's queue.
const LaneDepth = 1024

// laneIdle is how long an empty lane waits before its goroutine ends.
const laneIdle = 30 * time.Second

// laneBurst is how many queued requests a lane handles back to back before
// it gives up its processor. Not after each one: a reply's publish readies
// the NATS connection's flusher, which would then write every reply of a
// flood with a system call of its own; handled back to back, a burst's
// replies go out in one write.
const laneBurst = 16

type laneItem struct {
	req   micro.Request
	start time.Time
	// key is the request's reply key (RefuseReplyKey).
	key string
	// err is the LaneFunc's error, replied instead of staging.
	err error
	// f holds what LaneFunc filled in; the stage goes on with it.
	f *Fields
}

type lane struct {
	ch chan laneItem
	// full is the lane's LaneFull error, rendered once.
	full error
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
	// spare is the Fields of the last request the fast path answered, once
	// its reply is sent (zero), for the next one: the subscription's
	// goroutine answers them one at a time, so a cached resolve allocates
	// none. A request that goes on to a lane keeps its own.
	var spare atomic.Pointer[Fields]
	return micro.HandlerFunc(func(req micro.Request) {
		start := arrival(req)
		key, refused := r.RefuseReplyKey(name, req, start)
		if refused {
			return
		}
		f := spare.Swap(nil) // one for both: each escapes
		if f == nil {
			f = new(Fields)
		}
		if fast != nil {
			if body, done := fast(req, f); done {
				if r.finish(name, req, f, start, body, nil, key) {
					// Replied, logged and audited: nothing holds f.
					*f = Fields{}
					spare.Store(f)
				}
				return
			}
			*f = Fields{}
		}
		ln, lerr := laneOf(req, f)
		r.wg.Add(1)
		if lfull := r.enqueue(name, ls, ln, laneItem{req: req, start: start, key: key, err: lerr, f: f}, stage, full, fn); lfull != nil {
			// Its reply was rendered once for the lane: a flood's surplus
			// costs this goroutine next to nothing each.
			r.wg.Done()
			r.finish(name, req, f, start, nil, lfull, key)
		}
	})
}

// enqueue hands it to lane key without blocking, starting the lane's
// goroutine when it has none; when the lane's queue is full it returns the
// lane's full error.
func (r *Runner) enqueue(name string, ls *lanes, key string, it laneItem, stage StageFunc, full LaneFull, fn Func) error {
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
		return nil
	default:
		if l.full == nil {
			l.full = Rendered(full(key))
		}
		return l.full
	}
}

// runLane handles lane l's requests in order, until it has handled none in a
// whole period of laneIdle (so it ends between one and two laneIdle after its
// last request). Items are sent under ls.mu, so a lane removed while empty
// has lost nothing.
func (r *Runner) runLane(name string, ls *lanes, key string, l *lane, stage StageFunc, fn Func) {
	idle := time.NewTimer(laneIdle)
	defer idle.Stop()
	handled, seen := 0, 0
	for {
		select {
		case it := <-l.ch:
			r.stage(name, it, stage, fn)
			r.wg.Done()
			handled++
			// A lane working through a backlog gives up its processor
			// every laneBurst requests, so the subscription goroutines
			// (and the NATS read loop) never wait behind a whole flood
			// of it.
			if handled%laneBurst == 0 {
				runtime.Gosched()
			}
		case <-idle.C:
			if handled != seen {
				// Busy since the timer was set (the timer is not
				// reset per request: that would cost each one).
				seen = handled
				idle.Reset(laneIdle)
				continue
			}
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
	f := it.f
	if it.err != nil {
		r.finish(name, it.req, f, it.start, nil, it.err, it.key)
		return
	}
	reply, release, err := r.callStage(stage, it.req, f)
	if release != nil && (err != nil || reply != nil) {
		release() // answered here: nothing holds the admission
	}
	switch {
	case err != nil:
		r.finish(name, it.req, f, it.start, nil, err, it.key)
	case reply != nil:
		r.finish(name, it.req, f, it.start, reply, nil, it.key)
	default:
		r.wg.Add(1)
		go func() {
			defer func() { release(); r.wg.Done() }()
			r.run(name, fn, it.req, it.start, it.key, f)
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

// A renderedError is a wire error whose reply is rendered once, for an
// error replied to many requests (throttled, through a flood): finishSync
// sends its body and headers as they are instead of encoding them for each.
type renderedError struct {
	wire *events.Error
	body []byte
}

// Rendered renders err's reply once, when it is an *events.Error (the
// others are returned as they are: their wire form is internal). Its text,
// code and errors.Is/As are err's.
func Rendered(err error) error {
	we, ok := err.(*events.Error)
	if !ok {
		return err
	}
	we = events.AsWire(we)
	body, merr := events.Marshal(events.ErrorReply{Error: we})
	if merr != nil {
		return err
	}
	return &renderedError{wire: we, body: body}
}

func (e *renderedError) Error() string { return e.wire.Error() }
func (e *renderedError) Unwrap() error { return e.wire }

// wireOf is err's wire error and the body of its reply.
func wireOf(err error) (*events.Error, []byte) {
	if re, ok := err.(*renderedError); ok {
		return re.wire, re.body
	}
	we := events.AsWire(err)
	body, _ := events.Marshal(events.ErrorReply{Error: we})
	return we, body
}
