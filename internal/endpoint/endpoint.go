// Package endpoint runs micro endpoint handlers the way every cloudbridge
// endpoint needs: each request in its own goroutine, bounded without ever
// blocking the subscription (past the bound, throttled at once), under a
// deadline, with a recovered panic turned into an internal error, the wire
// error (micro headers and JSON body) sent on failure, one log event and the
// metrics per outcome, and a Wait that drains requests in flight.
package endpoint

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// Fields are log fields a handler fills in as it learns them.
type Fields struct {
	Conn   string
	Group  string
	Export string
	// Audit are the audit event's fields the handler learned.
	Audit AuditFields
}

// Func handles one request and returns the reply to encode as JSON, or an
// error whose wire form is sent. The payload is never logged.
type Func func(ctx context.Context, req micro.Request, f *Fields) (any, error)

// Runner runs handlers.
type Runner struct {
	log       zerolog.Logger
	throttled zerolog.Logger
	timeout   time.Duration
	max       int
	wg        sync.WaitGroup

	// eps are each endpoint's metric children, by name (made on its first
	// reply; read without a lock).
	eps sync.Map
	// lastEp is the endpoint state ep returned last.
	lastEp atomic.Pointer[epState]

	audit *Audit
	// auditWaits bounds the replies waiting for their audit event to be
	// stored (required mode), each on a goroutine of its own.
	auditWaits chan struct{}
	// subjects caches the audit subjects of resolve, test and token
	// events (auditSubject).
	subjects subjectCache
	// hdrs are reply header maps for reuse (nats.go encodes a header map
	// into the message and keeps nothing of it).
	hdrs sync.Pool
	// xkey seals replies to requesters that send their public curve key.
	xkey *events.ReplySealer
	xpub string
	// handlers run the admitted requests of Limited (kept goroutines).
	handlers *handlers
}

// Stats are the data of an endpoint's $SRV.STATS entry (StatsData): the
// same five counts as the entry's own fields, which srv counts as each reply
// is sent, every request from its arrival to its reply, asynchronous ones
// included (as earlier versions carried them in the data). They agree with
// /metrics, counted at the same moment.
type Stats struct {
	NumRequests           int           `json:"num_requests"`
	NumErrors             int           `json:"num_errors"`
	LastError             string        `json:"last_error,omitempty"`
	ProcessingTime        time.Duration `json:"processing_time"`
	AverageProcessingTime time.Duration `json:"average_processing_time"`
}

// StatsData is the data of an endpoint's $SRV.STATS entry (srv.Config.Data):
// its counts st.
func StatsData(_ string, st micro.EndpointStats) any {
	return Stats{NumRequests: st.NumRequests, NumErrors: st.NumErrors, LastError: st.LastError,
		ProcessingTime: st.ProcessingTime, AverageProcessingTime: st.AverageProcessingTime}
}

// epState is an endpoint's metric children, resolved once instead of per
// request.
type epState struct {
	name string
	ok   prometheus.Counter
	dur  prometheus.Observer
	// codes are the request counters of the error codes seen so far.
	codes sync.Map
}

// ep is endpoint name's state.
func (r *Runner) ep(name string) *epState {
	if e := r.lastEp.Load(); e != nil && e.name == name {
		return e // a flood of one endpoint's replies skips the map
	}
	if v, ok := r.eps.Load(name); ok {
		e := v.(*epState)
		r.lastEp.Store(e)
		return e
	}
	e := &epState{name: name, ok: metrics.Requests.WithLabelValues(name, "ok"), dur: metrics.RequestDuration.WithLabelValues(name)}
	v, _ := r.eps.LoadOrStore(name, e)
	return v.(*epState)
}

// requests is the request counter of the endpoint's outcome code.
func (e *epState) requests(name, code string) prometheus.Counter {
	if code == "ok" {
		return e.ok
	}
	if c, ok := e.codes.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c, _ := e.codes.LoadOrStore(code, metrics.Requests.WithLabelValues(name, code))
	return c.(prometheus.Counter)
}

// NewRunner returns a runner allowing maxInFlight concurrent requests per
// endpoint run by Handler, each under timeout, for the endpoints of a worker
// (the replies go through each request, on the connection it arrived on).
func NewRunner(log zerolog.Logger, timeout time.Duration, maxInFlight int) *Runner {
	if maxInFlight <= 0 {
		maxInFlight = 1024
	}
	if timeout <= 0 {
		timeout = 8 * time.Second
	}
	// Fast failures come in floods: one log line per second tells the cause.
	throttled := log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Second})
	r := &Runner{log: log, throttled: throttled, timeout: timeout, max: maxInFlight, handlers: newHandlers()}
	if kp, err := nkeys.CreateCurveKeys(); err == nil {
		if s, err := events.NewReplySealer(kp); err == nil {
			r.xkey, r.xpub = s, s.PublicKey()
		}
	}
	return r
}

// Timeout is the deadline of each request.
func (r *Runner) Timeout() time.Duration { return r.timeout }

// Limiter bounds requests in progress without ever blocking: Enter reserves
// a place or reports that there is none.
type Limiter struct{ slots chan struct{} }

// NewLimiter returns a limiter of n places.
func NewLimiter(n int) *Limiter {
	if n < 1 {
		n = 1
	}
	return &Limiter{slots: make(chan struct{}, n)}
}

// Enter reserves a place; release gives it back. ok is false when full.
func (l *Limiter) Enter() (release func(), ok bool) {
	select {
	case l.slots <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-l.slots }) }, true
	default:
		return nil, false
	}
}

// InUse is the number of places taken.
func (l *Limiter) InUse() int { return len(l.slots) }

// Handler adapts fn to a micro handler for endpoint name, with a bound of its
// own (maxInFlight requests at once): past it a request fails at once with
// throttled, so one busy endpoint never holds up another.
func (r *Runner) Handler(name string, fn Func) micro.Handler {
	l := NewLimiter(r.max)
	return r.Limited(name, func(micro.Request, *Fields) (func(), error) {
		release, ok := l.Enter()
		if !ok {
			return nil, events.Errorf(events.CodeThrottled, "%s: %d requests already in progress in this worker; try again later", name, r.max)
		}
		return release, nil
	}, fn)
}

// FastFunc tries to answer a request at once, on the subscription's
// goroutine, without blocking: it returns the reply body, or ok false to
// hand the request to the regular handler.
type FastFunc func(req micro.Request, f *Fields) (reply []byte, ok bool)

// AdmitFunc decides, on the subscription's goroutine and without blocking,
// whether a request may run: it returns a release called when the request is
// done, or the error replied at once.
type AdmitFunc func(req micro.Request, f *Fields) (release func(), err error)

// Limited adapts admit and fn to a micro handler: admit bounds requests
// without blocking, failing a request at once past its bound; an admitted
// request runs fn on a goroutine of its own (one kept from an earlier
// request when one is waiting: handlers), under the deadline. (A handler
// answering some requests inline first is Dispatched's fast path.)
func (r *Runner) Limited(name string, admit AdmitFunc, fn Func) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		start := arrival(req)
		key, refused := r.RefuseReplyKey(name, req, start)
		if refused {
			return
		}
		// One Fields for the admission and the handler (each escapes):
		// run clears it first.
		f := new(Fields)
		release, err := admit(req, f)
		if err != nil {
			r.finish(name, req, f, start, nil, err, key)
			return
		}
		r.wg.Add(1)
		r.handlers.run(func() {
			defer func() { release(); r.wg.Done() }()
			r.run(name, fn, req, start, key, f)
		})
	})
}

// Inline adapts fn to a micro handler run on the subscription's goroutine,
// for cheap handlers that must keep order; its reply goes out as finish
// sends it (never waiting for the audit stream on that goroutine). In
// required audit mode the reply's audit wait place is taken before fn runs:
// with none free the request is refused with unavailable and fn does not run
// (no invalidate applied for a request answered with an error).
func (r *Runner) Inline(name string, fn Func) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		r.wg.Add(1)
		defer r.wg.Done()
		start := arrival(req)
		key, refused := r.RefuseReplyKey(name, req, start)
		if refused {
			return
		}
		var f Fields
		required := r.audit != nil && r.audit.Auditor.Required()
		if required {
			if !r.takeAuditWait() {
				r.refuseAuditBacklog(name, req, &f, start, key)
				return
			}
		}
		held := required
		defer func() {
			if held { // fn panicked past call, or the reply did not go to its goroutine
				<-r.auditWaits
			}
		}()
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(r.timeout))
		defer cancel()
		out, err := r.call(ctx, fn, req, &f)
		var body []byte
		if err == nil {
			body, err = events.Marshal(out)
		}
		if !required {
			r.reply(name, req, &f, start, body, err, key, true)
			return
		}
		held = false
		r.afterAudit(func() { r.reply(name, req, &f, start, body, err, key, true) })
	})
}

// arrival is when req was received: srv.Request knows, else now.
func arrival(req micro.Request) time.Time {
	if a, ok := req.(interface{ Arrived() time.Time }); ok {
		return a.Arrived()
	}
	return time.Now()
}

// elapsed is req's processing time so far: srv.Request fixes it as the time
// its reply counts in $SRV.STATS, so both agree exactly.
func elapsed(req micro.Request, start time.Time) time.Duration {
	if e, ok := req.(interface{ Elapsed() time.Duration }); ok {
		return e.Elapsed()
	}
	return time.Since(start)
}

// Wait waits for requests in flight, at most until ctx is done.
func (r *Runner) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run runs fn for req and replies, with f (the caller's, nothing else uses
// it any more) cleared first: the handler fills in its fields from nothing,
// whatever the admission wrote there.
func (r *Runner) run(name string, fn Func, req micro.Request, start time.Time, key string, f *Fields) {
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(r.timeout))
	defer cancel()
	*f = Fields{}
	out, err := r.call(ctx, fn, req, f)
	var body []byte
	if err == nil {
		body, err = events.Marshal(out)
	}
	r.finishSync(name, req, f, start, body, err, key)
}

// RefuseReplyKey answers a request at once, before anything else runs for
// it (fast path, admission, handler), when its Cloudbridge-Reply-Key is not a
// public curve key or this worker cannot seal replies: nothing is done for a
// request whose reply is an error anyway. It returns the request's key
// (replyKey; the reply is sealed to it) and whether it answered. Every
// handler calls it first (Dispatched too), and hands the key on to its
// reply instead of reading the header again.
func (r *Runner) RefuseReplyKey(name string, req micro.Request, start time.Time) (key string, refused bool) {
	key = replyKey(req)
	var err error
	if key == "" {
		// A miscased Cloudbridge-Reply-Key would otherwise be ignored
		// and the reply sent in the clear to a requester that asked
		// for it sealed: refused, as a miscased body field is.
		h := req.Headers()
		if len(h) == 0 {
			return "", false
		}
		if _, given := h[events.HeaderReplyKey]; given {
			err = events.Errorf(events.CodeBadRequest, "%s: empty; give a public curve key (nkeys xkey, X…) or leave the header out", events.HeaderReplyKey)
		}
		for k := range h {
			if err == nil && strings.EqualFold(k, events.HeaderReplyKey) {
				err = events.Errorf(events.CodeBadRequest, "header %q: header names are case-sensitive, write it %s (nothing was sent in the clear)", k, events.HeaderReplyKey)
				break
			}
		}
		if err == nil {
			return "", false
		}
	} else if err = events.CheckReplyKey(key); err == nil {
		if r.xkey != nil {
			return key, false
		}
		err = events.Errorf(events.CodeUnavailable, "this worker cannot seal replies")
	}
	var f Fields
	if r.audit != nil {
		// The log and audit event name the group and connection the
		// subject does (resolve, test, token): a subject token, not "_".
		if op, _ := opOf(name); op != events.OpAdmin {
			if g, c, perr := r.audit.Subjects.ParseOp(op, req.Subject()); perr == nil {
				f.Group, f.Conn = g, c
			}
		}
	}
	// Nothing is sent to a key that is not one.
	r.finish(name, req, &f, start, nil, err, "")
	return key, true
}

// replyKey is the request's Cloudbridge-Reply-Key header (checked by
// RefuseReplyKey as the request arrived).
func replyKey(req micro.Request) string {
	return req.Headers().Get(events.HeaderReplyKey)
}

// DefaultAuditWaits bounds the replies waiting for their audit event to be
// stored at once (required mode), unless Audit.MaxWaiting says otherwise.
const DefaultAuditWaits = 1024

// finish replies on the subscription's goroutine (inline): at once, unless
// the audit event must be stored first (required mode), which is awaited on
// a goroutine of its own so the subscription never waits for it; at most
// Audit.MaxWaiting such replies wait at once, past which a request is
// refused at once with unavailable (and counted). A throttled refusal is
// replied at once in both modes: the Auditor never waits for its event, so
// a flood of them takes neither a place nor a goroutine each (unless its
// reply cannot be sealed: its outcome is internal then, and waits). key is the
// request's reply key (RefuseReplyKey), the reply sealed to it when not "".
// It reports whether the reply went out before it returned, so that nothing
// holds f any more (best-effort mode).
func (r *Runner) finish(name string, req micro.Request, f *Fields, start time.Time, body []byte, err error, key string) (done bool) {
	if r.audit == nil || !r.audit.Auditor.Required() {
		r.reply(name, req, f, start, body, err, key, true)
		return true
	}
	if err != nil && events.CodeOf(err) == events.CodeThrottled {
		// Decided on the outcome rendered, the one Publish sees: a
		// throttled refusal whose reply could not be sealed is internal,
		// and its event is waited for like any other's, not here.
		o := r.render(req, key, body, err)
		if o.code == throttledCode {
			r.send(name, req, f, start, o, key, true)
			return false
		}
		if !r.takeAuditWait() {
			r.putHeader(o.hdr)
			r.refuseAuditBacklog(name, req, f, start, key)
			return false
		}
		r.afterAudit(func() { r.send(name, req, f, start, o, key, true) })
		return false
	}
	if !r.takeAuditWait() {
		r.refuseAuditBacklog(name, req, f, start, key)
		return false
	}
	r.afterAudit(func() { r.reply(name, req, f, start, body, err, key, true) })
	return false
}

// throttledCode is the outcome of a throttled refusal.
const throttledCode = string(events.CodeThrottled)

// takeAuditWait takes one of the places of the replies waiting for their
// audit event (required mode), without blocking; false when none is free.
func (r *Runner) takeAuditWait() bool {
	select {
	case r.auditWaits <- struct{}{}:
		return true
	default:
		return false
	}
}

// refuseAuditBacklog refuses a request at once with unavailable for the
// audit's backlog (counted; no audit event), sealed to key like any reply.
func (r *Runner) refuseAuditBacklog(name string, req micro.Request, f *Fields, start time.Time, key string) {
	auditWaitsFull.Inc()
	err := events.Errorf(events.CodeUnavailable, "%d replies already wait for their audit event to be stored in this worker (serve --audit required); try again later", cap(r.auditWaits))
	r.reply(name, req, f, start, nil, err, key, false)
}

// afterAudit runs reply (which waits for the audit event to be stored) on a
// goroutine of its own, holding the audit wait place taken (takeAuditWait)
// until it returns.
func (r *Runner) afterAudit(reply func()) {
	r.wg.Add(1)
	go func() {
		defer func() { <-r.auditWaits; r.wg.Done() }()
		reply()
	}()
}

// finishSync replies from the request's own goroutine: it may wait for the
// audit event to be stored.
func (r *Runner) finishSync(name string, req micro.Request, f *Fields, start time.Time, body []byte, err error, key string) {
	r.reply(name, req, f, start, body, err, key, true)
}

// reply records the audit event (unless audited is false: a request refused
// for the audit's backlog), counts the outcome, sends the reply (body, or
// err's wire form; sealed to key when not "") and logs the outcome. In
// required mode the event is stored before the reply (a throttled refusal's
// only queued: Auditor.Publish), and a request whose event was not stored
// is refused with unavailable; best-effort, it is
// queued once the reply is sent, off the reply's latency. The outcome's one
// duration is counted in /metrics and $SRV.STATS and is the event's
// latency_ms: measured as the reply goes out (best-effort), or once the
// outcome is known, just before its event is stored (required).
func (r *Runner) reply(name string, req micro.Request, f *Fields, start time.Time, body []byte, err error, key string, audited bool) {
	r.send(name, req, f, start, r.render(req, key, body, err), key, audited)
}

// rendered is a reply ready to send (render).
type rendered struct {
	id  string
	hdr nats.Header
	we  *events.Error
	// body is what is sent, code the outcome, sealed whether body is
	// sealed, err the error to log.
	body   []byte
	code   string
	sealed bool
	err    error
}

// render is the reply of body or err to req: its request id and header,
// and what renderBody makes of it.
func (r *Runner) render(req micro.Request, key string, body []byte, err error) rendered {
	o := rendered{id: requestID(req)}
	if o.id == "" && (r.audit != nil || key != "") {
		// An id the audit event and a sealed reply are bound to; otherwise
		// nothing would record one.
		o.id = nuid.Next()
	}
	if o.id != "" {
		o.hdr = r.header()
		// The keys are in canonical form already (Header.Set would
		// canonicalize them on every reply).
		o.hdr[events.HeaderRequestID] = append(o.hdr[events.HeaderRequestID][:0], o.id)
	}
	o.we, o.body, o.code, o.sealed, o.err = r.renderBody(o.hdr, o.id, key, body, err)
	return o
}

// send sends the rendered reply o, recording its audit event when audited:
// first, and waiting for it to be stored, in required mode.
func (r *Runner) send(name string, req micro.Request, f *Fields, start time.Time, o rendered, key string, audited bool) {
	id, hdr, we, body, code, sealed, err := o.id, o.hdr, o.we, o.body, o.code, o.sealed, o.err
	audited = audited && r.audit != nil
	var d time.Duration
	if audited && r.audit.Auditor.Required() {
		d = elapsed(req, start)
		if aerr := r.publishAudit(name, req, f, id, start, d, code, key, sealed, we != nil); aerr != nil {
			we, body, code, sealed, err = r.renderBody(hdr, id, key, nil,
				events.Wrap(events.CodeUnavailable, aerr, "the audit event of this request could not be stored, so it is refused (serve --audit required)"))
		}
		audited = false
	} else {
		// Counted before it is sent: whoever has the reply finds it in
		// /metrics and $SRV.STATS.
		d = elapsed(req, start)
	}
	e := r.ep(name)
	e.requests(name, code).Inc()
	e.dur.Observe(d.Seconds())
	// The request (srv.Request) is safe to answer from any goroutine, and
	// counts the reply in the endpoint's $SRV.STATS as it is sent.
	switch rh, fast := req.(interface {
		RespondHeader([]byte, nats.Header) error
		ErrorHeader(code, description string, data []byte, hdr nats.Header) error
	}); {
	case we == nil && fast:
		_ = rh.RespondHeader(body, hdr)
		r.putHeader(hdr)
	case fast:
		// The error headers are added to a reused map, not a new one
		// per reply (a flood's throttled replies).
		if hdr == nil {
			hdr = r.header()
		}
		_ = rh.ErrorHeader(strconv.Itoa(we.Code.Number()), we.Message, body, hdr)
		r.putHeader(hdr)
	case we == nil:
		_ = req.Respond(body, micro.WithHeaders(micro.Headers(hdr)))
	default:
		_ = req.Error(strconv.Itoa(we.Code.Number()), we.Message, body, micro.WithHeaders(micro.Headers(hdr)))
	}
	if audited {
		_ = r.publishAudit(name, req, f, id, start, d, code, key, sealed, we != nil)
	}
	r.logOutcome(name, req.Subject(), f, code, d, err)
}

// renderBody is the reply of body or err: its wire error (nil for a success),
// the body to send (sealed to key when not "", its sender key in hdr), its
// outcome code, whether it is sealed, and the error to log. A reply that
// cannot be sealed is an internal error carrying nothing, never the
// plaintext instead, and its outcome is internal everywhere (metrics,
// $SRV.STATS, the audit event without a fingerprint, the log).
func (r *Runner) renderBody(hdr nats.Header, id, key string, body []byte, err error) (we *events.Error, out []byte, code string, sealed bool, lerr error) {
	code = "ok"
	if err != nil {
		we, body = wireOf(err) // rendered once for a Rendered error
		code = string(we.Code)
	}
	if key == "" {
		return we, body, code, false, err
	}
	var serr error
	if r.xkey == nil || hdr == nil {
		// RefuseReplyKey refuses such a request first; a handler that
		// forgot to call it gets this, not a panic.
		serr = fmt.Errorf("this worker cannot seal replies")
	} else if out, serr = r.xkey.Seal(key, id, time.Now().Add(events.SealedReplyTTL), body); serr == nil {
		hdr[events.HeaderSenderKey] = append(hdr[events.HeaderSenderKey][:0], r.xpub)
		return we, out, code, true, err
	}
	if hdr != nil {
		delete(hdr, events.HeaderSenderKey)
	}
	lerr = events.Wrap(events.CodeInternal, serr, "sealing the reply failed")
	we = events.AsWire(lerr)
	out, _ = events.Marshal(events.ErrorReply{Error: we})
	return we, out, string(we.Code), false, lerr
}

// header is an empty reply header map.
func (r *Runner) header() nats.Header {
	if h, ok := r.hdrs.Get().(nats.Header); ok {
		return h
	}
	return nats.Header{}
}

// putHeader gives back a reply header map once its reply is sent.
func (r *Runner) putHeader(h nats.Header) {
	if h == nil {
		return
	}
	delete(h, events.HeaderSenderKey)
	delete(h, micro.ErrorHeader)
	delete(h, micro.ErrorCodeHeader)
	r.hdrs.Put(h)
}

func (r *Runner) call(ctx context.Context, fn Func, req micro.Request, f *Fields) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error().Str("subject", req.Subject()).Str("panic", typeOf(p)).
				Bytes("stack", debug.Stack()).Msg("recovered panic in handler")
			reply, err = nil, events.ErrInternal
		}
	}()
	return fn(ctx, req, f)
}

// typeOf describes a panic value by type only: its text could carry a payload.
func typeOf(p any) string { return fmt.Sprintf("%T", p) }

func (r *Runner) logOutcome(name, subject string, f *Fields, code string, d time.Duration, err error) {
	var ev *zerolog.Event
	switch code {
	case "ok":
		ev = r.log.Debug()
	case string(events.CodeInternal):
		ev = r.log.Error()
	case string(events.CodeThrottled):
		ev = r.throttled.Warn()
	case string(events.CodeUnavailable), string(events.CodeTimeout):
		ev = r.log.Warn()
	default:
		ev = r.log.Info()
	}
	if err != nil && ev.Enabled() {
		// The full cause (the NATS, SDK or registry error behind the wire
		// error) goes to the log; the reply carried the safe message only.
		ev = ev.Str("err", events.Detail(err))
	}
	if ev == nil || !ev.Enabled() {
		return
	}
	ev = ev.Str("endpoint", name).Str("subject", subject).Str("code", code).Dur("duration", d)
	if f.Conn != "" {
		ev = ev.Str("conn", f.Conn)
	}
	if f.Group != "" {
		ev = ev.Str("group", f.Group)
	}
	if f.Export != "" {
		ev = ev.Str("export", f.Export)
	}
	ev.Msg("request")
}
