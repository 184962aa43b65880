// Package endpoint runs micro endpoint handlers the way every cloudbridge
// endpoint needs: each request in its own goroutine (bounded), under a
// deadline, with a recovered panic turned into an internal error, the wire
// error (micro headers and JSON body) sent on failure, one log event and the
// metrics per outcome, and a Wait that drains requests in flight.
package endpoint

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// Fields are log fields a handler fills in as it learns them.
type Fields struct {
	Conn   string
	Group  string
	Export string
}

// Func handles one request and returns the reply to encode as JSON, or an
// error whose wire form is sent. The payload is never logged.
type Func func(ctx context.Context, req micro.Request, f *Fields) (any, error)

// Runner runs handlers.
type Runner struct {
	nc      *nats.Conn
	log     zerolog.Logger
	timeout time.Duration
	sem     chan struct{}
	wg      sync.WaitGroup
}

// NewRunner returns a runner allowing maxInFlight concurrent requests, each
// under timeout, replying on nc.
func NewRunner(nc *nats.Conn, log zerolog.Logger, timeout time.Duration, maxInFlight int) *Runner {
	if maxInFlight <= 0 {
		maxInFlight = 1024
	}
	if timeout <= 0 {
		timeout = 8 * time.Second
	}
	return &Runner{nc: nc, log: log, timeout: timeout, sem: make(chan struct{}, maxInFlight)}
}

// Handler adapts fn to a micro handler for endpoint name. When the runner is
// full the subscription's goroutine waits, which applies back-pressure.
func (r *Runner) Handler(name string, fn Func) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		r.sem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-r.sem; r.wg.Done() }()
			r.run(name, fn, req)
		}()
	})
}

// FastFunc tries to answer a request at once, on the subscription's
// goroutine, without blocking: it returns the reply body, or ok false to
// hand the request to the regular handler.
type FastFunc func(req micro.Request, f *Fields) (reply []byte, ok bool)

// Fast adapts fast and fn to a micro handler: fast answers what it can inline
// (a cache hit), everything else runs as Handler runs it.
func (r *Runner) Fast(name string, fast FastFunc, fn Func) micro.Handler {
	slow := r.Handler(name, fn)
	ok := metrics.Requests.WithLabelValues(name, "ok")
	latency := metrics.RequestDuration.WithLabelValues(name)
	return micro.HandlerFunc(func(req micro.Request) {
		start := time.Now()
		var f Fields
		body, done := fast(req, &f)
		if !done {
			slow.Handle(req)
			return
		}
		_ = req.Respond(body)
		d := time.Since(start)
		ok.Inc()
		latency.Observe(d.Seconds())
		r.logOutcome(name, req.Subject(), f, "ok", d, nil)
	})
}

// Inline adapts fn to a micro handler run on the subscription's goroutine,
// for cheap handlers that must keep order.
func (r *Runner) Inline(name string, fn Func) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		r.wg.Add(1)
		defer r.wg.Done()
		r.run(name, fn, req)
	})
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

func (r *Runner) run(name string, fn Func, req micro.Request) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	var f Fields
	out, err := r.call(ctx, fn, req, &f)
	var body []byte
	if err == nil {
		body, err = events.Marshal(out)
	}
	code := "ok"
	// The reply is published on the runner's connection, not through
	// req.Respond or req.Error: micro reads the request's state once the
	// handler returned, while this goroutine may still be working.
	reply := &nats.Msg{Subject: req.Reply(), Data: body}
	if err != nil {
		we := events.AsWire(err)
		code = string(we.Code)
		reply.Data, _ = events.Marshal(events.ErrorReply{Error: we})
		reply.Header = nats.Header{}
		reply.Header.Set(micro.ErrorCodeHeader, strconv.Itoa(we.Code.Number()))
		reply.Header.Set(micro.ErrorHeader, we.Message)
	}
	if reply.Subject != "" {
		_ = r.nc.PublishMsg(reply)
	}
	d := time.Since(start)
	metrics.Requests.WithLabelValues(name, code).Inc()
	metrics.RequestDuration.WithLabelValues(name).Observe(d.Seconds())
	r.logOutcome(name, req.Subject(), f, code, d, err)
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

func (r *Runner) logOutcome(name, subject string, f Fields, code string, d time.Duration, err error) {
	var ev *zerolog.Event
	switch code {
	case "ok":
		ev = r.log.Debug()
	case string(events.CodeInternal):
		ev = r.log.Error()
	case string(events.CodeUnavailable), string(events.CodeTimeout), string(events.CodeThrottled):
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
