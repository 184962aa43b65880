// Package srv implements the NATS micro service protocol (the $SRV PING, INFO
// and STATS subjects, with nats.go micro's types) for cloudbridge's
// endpoints, whose handlers answer most requests later, from other
// goroutines: nats.go micro counts a request's outcome when its handler
// returns, so it misses every asynchronous reply. Here an endpoint's
// num_requests, num_errors, last_error and processing times are updated when
// its reply is sent, synchronous or not; an error is a reply carrying the
// micro error headers (Request.Error). Handlers get a micro.Request, so they
// are written as for micro.
package srv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/cloudbridge/cloudbridge/internal/version"
)

// Config describes a service.
type Config struct {
	Name        string
	Version     string
	Description string
	Metadata    map[string]string
	// QueueGroup of the endpoints; "" is micro's default ("q").
	QueueGroup string
	// Data, when set, gives the data of an endpoint's $SRV.STATS entry,
	// from its name and its counts.
	Data func(endpoint string, st micro.EndpointStats) any
}

// EndpointOpt configures an endpoint.
type EndpointOpt func(*endpointOpts)

type endpointOpts struct {
	subject    string
	noQueue    bool
	queueGroup string
	metadata   map[string]string
}

// WithSubject sets the endpoint's subject (the default is its name).
func WithSubject(subject string) EndpointOpt { return func(o *endpointOpts) { o.subject = subject } }

// WithQueueGroupDisabled makes every instance receive each request.
func WithQueueGroupDisabled() EndpointOpt { return func(o *endpointOpts) { o.noQueue = true } }

// WithQueueGroup overrides the service's queue group for this endpoint.
func WithQueueGroup(q string) EndpointOpt { return func(o *endpointOpts) { o.queueGroup = q } }

// WithMetadata annotates the endpoint in $SRV.INFO.
func WithMetadata(m map[string]string) EndpointOpt {
	return func(o *endpointOpts) { o.metadata = maps.Clone(m) }
}

// Service is a running service instance.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	id      string
	started time.Time

	mu        sync.Mutex
	endpoints []*endpoint
	verbSubs  []*nats.Subscription
	stopped   bool
}

type endpoint struct {
	nc         *nats.Conn
	name       string
	subject    string
	queueGroup string
	metadata   map[string]string
	handler    micro.Handler
	sub        *nats.Subscription

	// received counts the requests handed to the handler.
	received atomic.Int64

	mu    sync.Mutex
	stats micro.EndpointStats
}

var (
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)
	subjectRe = regexp.MustCompile(`^[^ >]*[>]?$`)
)

// ErrStopped is returned by AddEndpoint on a stopped service.
var ErrStopped = errors.New("service stopped")

// Add starts a service on nc: it subscribes its $SRV.PING, INFO and STATS
// subjects (all services, services of its name, this instance). Endpoints
// are added with AddEndpoint.
func Add(nc *nats.Conn, cfg Config) (*Service, error) {
	if !nameRe.MatchString(cfg.Name) {
		return nil, fmt.Errorf("%w: service name %q", micro.ErrConfigValidation, cfg.Name)
	}
	if !version.IsSemVer(cfg.Version) {
		return nil, fmt.Errorf("%w: version %q is not SemVer", micro.ErrConfigValidation, cfg.Version)
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = micro.DefaultQueueGroup
	}
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	s := &Service{cfg: cfg, nc: nc, id: nuid.Next(), started: time.Now().UTC()}
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		for _, sub := range [][2]string{{"", ""}, {cfg.Name, ""}, {cfg.Name, s.id}} {
			subject, err := micro.ControlSubject(verb, sub[0], sub[1])
			if err != nil {
				s.unsubscribeAll()
				return nil, err
			}
			verb := verb
			ns, err := nc.Subscribe(subject, func(m *nats.Msg) { s.control(verb, m) })
			if err != nil {
				s.unsubscribeAll()
				return nil, fmt.Errorf("subscribing %s: %w", subject, err)
			}
			s.verbSubs = append(s.verbSubs, ns)
		}
	}
	return s, nil
}

func (s *Service) unsubscribeAll() {
	for _, sub := range s.verbSubs {
		_ = sub.Unsubscribe()
	}
}

func (s *Service) control(verb micro.Verb, m *nats.Msg) {
	var v any
	switch verb {
	case micro.PingVerb:
		v = s.Ping()
	case micro.InfoVerb:
		v = s.Info()
	default:
		v = s.Stats()
	}
	body, err := json.Marshal(v)
	if err != nil {
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{micro.ErrorCodeHeader: {"500"},
			micro.ErrorHeader: {fmt.Sprintf("Error handling %s request", verb)}}})
		return
	}
	_ = m.Respond(body)
}

// AddEndpoint subscribes endpoint name (a queue subscription in the
// service's queue group, unless disabled) and hands each request to h.
func (s *Service) AddEndpoint(name string, h micro.Handler, opts ...EndpointOpt) error {
	var o endpointOpts
	for _, opt := range opts {
		opt(&o)
	}
	subject := name
	if o.subject != "" {
		subject = o.subject
	}
	if !nameRe.MatchString(name) {
		return fmt.Errorf("%w: endpoint name %q", micro.ErrConfigValidation, name)
	}
	if !subjectRe.MatchString(subject) {
		return fmt.Errorf("%w: endpoint subject %q", micro.ErrConfigValidation, subject)
	}
	queue := ""
	if !o.noQueue {
		queue = s.cfg.QueueGroup
		if o.queueGroup != "" {
			queue = o.queueGroup
		}
	}
	e := &endpoint{nc: s.nc, name: name, subject: subject, queueGroup: queue, metadata: o.metadata, handler: h,
		stats: micro.EndpointStats{Name: name, Subject: subject, QueueGroup: queue}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	cb := func(m *nats.Msg) {
		e.received.Add(1)
		e.handler.Handle(&Request{msg: m, ep: e, start: time.Now()})
	}
	var err error
	if queue == "" {
		e.sub, err = s.nc.Subscribe(subject, cb)
	} else {
		e.sub, err = s.nc.QueueSubscribe(subject, queue, cb)
	}
	if err != nil {
		return fmt.Errorf("subscribing endpoint %s: %w", name, err)
	}
	s.endpoints = append(s.endpoints, e)
	return nil
}

// Pending is the number of endpoint name's requests received and not yet
// answered (not on the wire: $SRV.STATS counts replies).
func (s *Service) Pending(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.endpoints {
		if e.name == name {
			e.mu.Lock()
			n := int(e.received.Load()) - e.stats.NumRequests
			e.mu.Unlock()
			return n
		}
	}
	return 0
}

// ID is the instance's id.
func (s *Service) ID() string { return s.id }

func (s *Service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.cfg.Name, ID: s.id, Version: s.cfg.Version, Metadata: maps.Clone(s.cfg.Metadata)}
}

// Ping is the $SRV.PING reply.
func (s *Service) Ping() micro.Ping {
	return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType}
}

// Info is the $SRV.INFO reply.
func (s *Service) Info() micro.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	eps := make([]micro.EndpointInfo, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		eps = append(eps, micro.EndpointInfo{Name: e.name, Subject: e.subject, QueueGroup: e.queueGroup, Metadata: maps.Clone(e.metadata)})
	}
	return micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.cfg.Description, Endpoints: eps}
}

// Stats is the $SRV.STATS reply: each endpoint's counts of the replies sent
// so far.
func (s *Service) Stats() micro.Stats {
	s.mu.Lock()
	eps := append([]*endpoint(nil), s.endpoints...)
	s.mu.Unlock()
	st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started,
		Endpoints: make([]*micro.EndpointStats, 0, len(eps))}
	for _, e := range eps {
		e.mu.Lock()
		es := e.stats
		e.mu.Unlock()
		if s.cfg.Data != nil {
			es.Data, _ = json.Marshal(s.cfg.Data(e.name, es))
		}
		st.Endpoints = append(st.Endpoints, &es)
	}
	return st
}

// Stop drains every subscription of the service (the requests already
// received are still handed to their handlers) and waits until they are
// closed, at most until ctx is done; then it unsubscribes what is left.
// Replies to requests in progress are still sent.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	subs := append([]*nats.Subscription(nil), s.verbSubs...)
	for _, e := range s.endpoints {
		subs = append(subs, e.sub)
	}
	s.endpoints = nil
	s.verbSubs = nil
	s.mu.Unlock()
	// A connection closed meanwhile closes every subscription without
	// telling them apart (their own status stays draining).
	connClosed := s.nc.StatusChanged(nats.CLOSED)
	defer s.nc.RemoveStatusListener(connClosed)
	var errs []error
	for _, sub := range subs {
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("draining %s: %w", sub.Subject, err))
		}
	}
	if s.nc.IsClosed() {
		return errors.Join(errs...)
	}
	for _, sub := range subs {
		// Sent, or the channel closed, when the subscription is closed
		// (at once when it is already).
		select {
		case <-sub.StatusChanged(nats.SubscriptionClosed):
		case <-connClosed:
			return errors.Join(errs...)
		case <-ctx.Done():
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return errors.Join(append(errs, fmt.Errorf("draining the service's subscriptions: %w", ctx.Err()))...)
		}
	}
	return errors.Join(errs...)
}

// Request is a request to an endpoint: a micro.Request whose reply, sent
// from any goroutine, updates its endpoint's stats as it is sent. Only the
// first reply counts.
type Request struct {
	msg   *nats.Msg
	ep    *endpoint
	start time.Time
	// recorded is set by the first reply, the one counted (an atomic
	// flag, not a sync.Once: no mutex of its own on every reply).
	recorded atomic.Bool
	// took, once set by Elapsed, is the processing time counted.
	took atomic.Int64
}

var _ micro.Request = (*Request)(nil)

// Arrived is when the request was received.
func (r *Request) Arrived() time.Time { return r.start }

// Elapsed fixes the request's processing time, from its arrival to now, as
// the time its reply counts (a caller measuring it for its own metrics just
// before replying counts the same).
func (r *Request) Elapsed() time.Duration {
	d := time.Since(r.start)
	if !r.took.CompareAndSwap(0, int64(d)+1) {
		return time.Duration(r.took.Load() - 1)
	}
	return d
}

// record counts the reply (an error reply when code is not "").
func (r *Request) record(code, description string) {
	if !r.recorded.CompareAndSwap(false, true) {
		return
	}
	var d time.Duration
	if t := r.took.Load(); t != 0 {
		d = time.Duration(t - 1)
	} else {
		d = time.Since(r.start)
	}
	e := r.ep
	e.mu.Lock()
	e.stats.NumRequests++
	e.stats.ProcessingTime += d
	e.stats.AverageProcessingTime = e.stats.ProcessingTime / time.Duration(e.stats.NumRequests)
	if code != "" {
		e.stats.NumErrors++
		e.stats.LastError = joinError(e.stats.LastError, code, description)
	}
	e.mu.Unlock()
}

// joinError is code:description, reusing prev when it is that already (a
// flood's errors are one error many times).
func joinError(prev, code, description string) string {
	if len(prev) == len(code)+1+len(description) && prev[:len(code)] == code &&
		prev[len(code)] == ':' && prev[len(code)+1:] == description {
		return prev
	}
	return code + ":" + description
}

// Respond sends the reply (counted first, so whoever has it sees it in
// $SRV.STATS).
func (r *Request) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, o := range opts {
		o(m)
	}
	code, desc := "", ""
	if m.Header != nil {
		code, desc = m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader)
	}
	r.record(code, desc)
	return r.send(m)
}

// RespondHeader sends a successful reply with headers hdr (none when nil),
// counted first as Respond does, without the options' copies: for the hot
// path. hdr must not carry the micro error headers; it is not kept once the
// reply is sent.
func (r *Request) RespondHeader(data []byte, hdr nats.Header) error {
	r.record("", "")
	if r.msg.Reply == "" {
		return nil
	}
	var err error
	if hdr == nil {
		err = r.ep.nc.Publish(r.msg.Reply, data)
	} else {
		err = r.ep.nc.PublishMsg(&nats.Msg{Subject: r.msg.Reply, Header: hdr, Data: data})
	}
	if err != nil {
		return fmt.Errorf("%w: %w", micro.ErrRespond, err)
	}
	return nil
}

// ErrorHeader sends an error reply as Error does, with headers hdr (none
// when nil) and the micro error headers added to them in place, without the
// options' copies: for the hot path (a flood's throttled replies). hdr is
// not kept once the reply is sent.
func (r *Request) ErrorHeader(code, description string, data []byte, hdr nats.Header) error {
	if code == "" {
		return fmt.Errorf("%w: error code", micro.ErrArgRequired)
	}
	if description == "" {
		return fmt.Errorf("%w: description", micro.ErrArgRequired)
	}
	if hdr == nil {
		hdr = nats.Header{}
	}
	// The keys are in canonical form already (Header.Set would
	// canonicalize them on every reply).
	hdr[micro.ErrorHeader] = append(hdr[micro.ErrorHeader][:0], description)
	hdr[micro.ErrorCodeHeader] = append(hdr[micro.ErrorCodeHeader][:0], code)
	r.record(code, description)
	return r.send(&nats.Msg{Header: hdr, Data: data})
}

// RespondJSON encodes v and responds with it.
func (r *Request) RespondJSON(v any, opts ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return r.Respond(b, opts...)
}

// Error sends an error reply: the micro error headers, and data.
func (r *Request) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" {
		return fmt.Errorf("%w: error code", micro.ErrArgRequired)
	}
	if description == "" {
		return fmt.Errorf("%w: description", micro.ErrArgRequired)
	}
	// The options' headers are used as they are (micro.WithHeaders hands
	// its map to a message without headers), not copied: the error headers
	// are added to that map, which is not to be used for another reply.
	m := &nats.Msg{}
	for _, o := range opts {
		o(m)
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(micro.ErrorHeader, description)
	m.Header.Set(micro.ErrorCodeHeader, code)
	m.Data = data
	r.record(code, description)
	return r.send(m)
}

func (r *Request) send(m *nats.Msg) error {
	if r.msg.Reply == "" {
		// Nothing to send to: handled and counted all the same.
		return nil
	}
	m.Subject = r.msg.Reply
	if err := r.ep.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("%w: %w", micro.ErrRespond, err)
	}
	return nil
}

// Data is the request's body.
func (r *Request) Data() []byte { return r.msg.Data }

// Headers are the request's headers.
func (r *Request) Headers() micro.Headers { return micro.Headers(r.msg.Header) }

// Subject is the subject the request was sent to.
func (r *Request) Subject() string { return r.msg.Subject }

// Reply is the request's reply subject.
func (r *Request) Reply() string { return r.msg.Reply }
