// Package audit publishes the value-free audit events of requests to the
// audit stream: asynchronously through a bounded buffer drained in batches
// (best-effort: a full buffer or a failed store is counted, never waited
// for), or awaiting the stream's ack before the reply (required). Throttled
// refusals are summarised per subject (summary.go), in both modes, and never
// waited for. It also
// computes the fingerprint of a served value: HMAC-SHA256 under a key derived
// from the master key, so the log never holds the value.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// Mode is how a request depends on its audit event.
type Mode string

// Modes of `serve --audit`.
const (
	BestEffort Mode = "best-effort"
	Required   Mode = "required"
)

// FingerprintInfo is the HKDF info of the fingerprint key.
const FingerprintInfo = "cloudbridge audit fingerprint"

// Defaults.
const (
	DefaultBuffer     = 8192
	DefaultBatch      = 256
	DefaultAckTimeout = 2 * time.Second
	DefaultLinger     = 2 * time.Millisecond
	// DedupWindow is the audit stream's duplicate window: the same request
	// seen by several workers (invalidate is a broadcast) is stored once.
	DedupWindow = 2 * time.Minute
	// DefaultRetention is the audit stream's default max age.
	DefaultRetention = 90 * 24 * time.Hour
)

var (
	published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cloudbridge_audit_events_total", Help: "Audit events stored in the audit stream.",
	})
	recovered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cloudbridge_audit_stream_recreated_total", Help: "Times the audit stream was found missing and re-created.",
	})
	dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_audit_dropped_total",
		Help: "Requests whose audit event was not stored, by reason (buffer_full, publish_failed, refused, stopped); a summary lost counts the throttled requests it stood for (its count).",
	}, []string{"reason"})
	summarised = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cloudbridge_audit_summarised_total",
		Help: "Throttled requests recorded by the summary events stored (the sum of their count), not by events of their own.",
	})
	summariesFull = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cloudbridge_audit_summaries_full_total",
		Help: "Throttled requests whose event was published on its own because 4,096 summary windows (subject and requester) were already open.",
	})
)

func init() {
	metrics.Registry.MustRegister(published, dropped, recovered, summarised, summariesFull)
}

// Summarised is the count of throttled requests recorded by stored summary
// events, for tests.
func Summarised() float64 {
	var m dto.Metric
	_ = summarised.Write(&m)
	return m.GetCounter().GetValue()
}

// SummariesFull is the count of throttled events published on their own past
// the bound of summary windows, for tests.
func SummariesFull() float64 {
	var m dto.Metric
	_ = summariesFull.Write(&m)
	return m.GetCounter().GetValue()
}

// Recreated is the count of audit stream re-creations, for tests.
func Recreated() float64 {
	var m dto.Metric
	_ = recovered.Write(&m)
	return m.GetCounter().GetValue()
}

// Dropped is the count of requests whose audit event was lost for reason
// (a summary's count), for tests.
func Dropped(reason string) float64 {
	var m dto.Metric
	_ = dropped.WithLabelValues(reason).Write(&m)
	return m.GetCounter().GetValue()
}

// Config configures a Publisher.
type Config struct {
	JS         jetstream.JetStream
	Mode       Mode
	Buffer     int
	Batch      int
	AckTimeout time.Duration
	// Linger is how long a batch waits for more events once the buffer is
	// empty (default DefaultLinger; negative: not at all).
	Linger time.Duration
	Logger zerolog.Logger
	// Recover, when set, re-creates the audit stream. It is called when a
	// publish finds no stream (deleted while the worker runs), on a
	// goroutine of its own, one call at a time and at most once per
	// RecoverEvery; the requests go on (best-effort) or are refused
	// (required) meanwhile.
	Recover func(ctx context.Context) error
	// SummaryWindow is the window of a subject's throttled events, per
	// requester (default DefaultSummaryWindow; negative: no summaries, one
	// event each).
	SummaryWindow time.Duration
	// MaxSummaries bounds the summary windows open, one per subject and
	// requester (default DefaultMaxSummaries).
	MaxSummaries int
}

// RecoverEvery spaces the calls of Config.Recover.
const RecoverEvery = time.Second

// Publisher publishes audit events.
type Publisher struct {
	cfg  Config
	ch   chan item
	done chan struct{}
	once sync.Once
	// mu guards closed against a publish racing with Stop.
	mu     sync.RWMutex
	closed bool
	// The loggers of repeated failures log each once a second with the
	// cause, one rate per kind of message, so a flood of one (a warning
	// per throttled event past the bound of windows) never takes the lines
	// of another (an event not stored).
	logMissing, logRefused, logNotStored, logFull, logTooMany zerolog.Logger
	// recovering is held while Recover runs; lastRecover spaces the calls.
	recovering  sync.Mutex
	recoverMu   sync.Mutex
	lastRecover time.Time
	recoverWG   sync.WaitGroup
	// stopping is closed by Stop: a lingering batch goes at once.
	stopping chan struct{}
	// buf is the loop's encoding buffer.
	buf []byte
	// lost, full and stopped are dropped's children, counting the requests
	// whose events were lost (standsFor).
	lost, full, stopped prometheus.Counter
	// windows are the subjects' summary windows of throttled events.
	sumMu   sync.Mutex
	windows map[windowKey]*window
	sumFull prometheus.Counter
}

// noStream reports whether a publish failed because no stream captures
// its subject.
func noStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// recoverStream calls Config.Recover in the background after a publish found
// no stream: at most one call at a time, at most once per RecoverEvery.
func (p *Publisher) recoverStream(err error) {
	if p.cfg.Recover == nil || !noStream(err) {
		return
	}
	p.recoverMu.Lock()
	if time.Since(p.lastRecover) < RecoverEvery || !p.recovering.TryLock() {
		p.recoverMu.Unlock()
		return
	}
	p.lastRecover = time.Now()
	p.recoverWG.Add(1)
	p.recoverMu.Unlock()
	go func() {
		defer p.recoverWG.Done()
		defer p.recovering.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*p.cfg.AckTimeout)
		defer cancel()
		if rerr := p.cfg.Recover(ctx); rerr != nil {
			p.logMissing.Error().Str("err", rerr.Error()).Msg("audit stream missing and not re-created")
			return
		}
		recovered.Inc()
		p.cfg.Logger.Warn().Msg("audit stream was missing: re-created")
	}()
}

type item struct {
	subject, msgID string
	ev             *events.AuditEvent
}

// eventPool holds the events Publish took, once encoded or counted, for
// NewEvent.
var eventPool = sync.Pool{New: func() any { return new(events.AuditEvent) }}

// NewEvent is a zero event to fill and hand to Publish: a reused one, so a
// request's event costs no allocation of its own.
func NewEvent() *events.AuditEvent { return eventPool.Get().(*events.AuditEvent) }

// release zeroes ev and keeps it for NewEvent: Publish took it, and nothing
// refers to it any more (encoded, counted or dropped).
func release(ev *events.AuditEvent) {
	*ev = events.AuditEvent{}
	eventPool.Put(ev)
}

// standsFor is how many requests ev records: a summary's count, else one.
// A lost event is counted in cloudbridge_audit_dropped_total by it, so the
// requests lost and the requests the stored events record add up to the
// requests.
func standsFor(ev *events.AuditEvent) float64 { return float64(max(ev.Count, 1)) }

// New returns a started publisher; Stop flushes and stops it.
func New(cfg Config) *Publisher {
	if cfg.Mode == "" {
		cfg.Mode = BestEffort
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.SummaryWindow == 0 {
		cfg.SummaryWindow = DefaultSummaryWindow
	}
	if cfg.MaxSummaries <= 0 {
		cfg.MaxSummaries = DefaultMaxSummaries
	}
	p := &Publisher{
		cfg: cfg, ch: make(chan item, cfg.Buffer), done: make(chan struct{}), stopping: make(chan struct{}),
		logMissing: onceASecond(cfg.Logger), logRefused: onceASecond(cfg.Logger),
		logNotStored: onceASecond(cfg.Logger), logFull: onceASecond(cfg.Logger),
		logTooMany: onceASecond(cfg.Logger),
		lost:       dropped.WithLabelValues("publish_failed"),
		full:       dropped.WithLabelValues("buffer_full"),
		stopped:    dropped.WithLabelValues("stopped"),
		windows:    map[windowKey]*window{},
		sumFull:    summariesFull,
	}
	go p.loop()
	if cfg.SummaryWindow > 0 {
		go p.sweep()
	}
	return p
}

// onceASecond is l logging at most a line a second (a sampler of its own).
func onceASecond(l zerolog.Logger) zerolog.Logger {
	return l.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Second})
}

// Required reports whether requests wait for their audit event to be stored.
func (p *Publisher) Required() bool { return p.cfg.Mode == Required }

// Publish records ev on subject, msgID naming the request for the stream's
// duplicate detection (used for invalidate, the one broadcast). Best-effort:
// it never blocks and returns nil (a full buffer is counted). Required: it
// returns once the stream stored the event, or the error saying it did not;
// except for a throttled refusal, which served nothing: in both modes its
// event is summarised (summary.go; unless SummaryWindow is negative) and goes
// through the buffer, never waited for, and Publish returns nil at once.
// Publish takes ev: the caller must not use it once Publish is called (it is
// reused, NewEvent).
func (p *Publisher) Publish(ctx context.Context, subject, msgID string, ev *events.AuditEvent) error {
	throttled := ev.Outcome == throttledOutcome
	summary := throttled && p.cfg.SummaryWindow > 0
	if !p.Required() || throttled {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.closed {
			p.stopped.Inc()
			release(ev)
			return nil
		}
		if summary {
			counted, due := p.summarise(subject, ev)
			if counted {
				release(ev)
				return nil
			}
			if due != nil {
				p.enqueue(item{subject: subject, ev: due})
			}
		}
		p.enqueue(item{subject, msgID, ev})
		return nil
	}
	msg, err := message(subject, msgID, ev)
	release(ev) // encoded
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
	defer cancel()
	if _, err := p.cfg.JS.PublishMsg(ctx, msg); err != nil {
		dropped.WithLabelValues("refused").Inc()
		p.recoverStream(err)
		p.logRefused.Error().Str("subject", subject).Str("err", err.Error()).Msg("audit event not stored: request refused")
		return fmt.Errorf("storing audit event: %w", err)
	}
	published.Inc()
	return nil
}

func message(subject, msgID string, ev *events.AuditEvent) (*nats.Msg, error) {
	return msgOf(subject, msgID, ev, appendEvent(nil, ev)), nil
}

// msgOf is the message of ev, whose JSON is body.
func msgOf(subject, msgID string, ev *events.AuditEvent, body []byte) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: body}
	if id := dedupID(msgID, ev); id != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: {id}}
	}
	return m
}

// dedupID is the message id of ev's message. Only a broadcast (invalidate:
// every worker answers it) needs the stream's duplicate detection; every
// other request reaches one worker of the queue group, and a message id would
// cost the server a window entry per request.
func dedupID(msgID string, ev *events.AuditEvent) string {
	if ev.Op == events.OpInvalidate {
		return msgID
	}
	return ""
}

// loop drains the buffer in batches of asynchronous publishes, waiting for
// each batch's acks before the next, so at most one batch is outstanding. A
// batch not full at once waits Linger for more, asleep (not woken by each
// event that arrives meanwhile), then takes what came.
func (p *Publisher) loop() {
	defer close(p.done)
	batch := make([]item, 0, p.cfg.Batch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for it := range p.ch {
		batch = append(batch[:0], it)
		open := p.drain(&batch)
		if open && len(batch) < p.cfg.Batch && p.cfg.Linger > 0 {
			// Wait a little for more: one ack per batch instead of one
			// per event when requests trickle in.
			linger.Reset(p.cfg.Linger)
			select {
			case <-linger.C:
			case <-p.stopping:
				linger.Stop()
			}
			p.drain(&batch)
		}
		p.send(batch)
		releaseAll(batch)
	}
}

// drain moves what the buffer holds into batch, up to a full batch, without
// waiting; false once the buffer is closed.
func (p *Publisher) drain(batch *[]item) bool {
	for len(*batch) < p.cfg.Batch {
		select {
		case more, ok := <-p.ch:
			if !ok {
				return false
			}
			*batch = append(*batch, more)
		default:
			return true
		}
	}
	return true
}

// send publishes a batch: every event but the last as a plain publish (no
// ack each: the stream's acks would cost the server and this worker more than
// the events themselves), the last one awaiting the stream's ack. Published
// in order on one connection, the batch is stored when its last event is;
// when the last is not acknowledged, the whole batch is counted lost. The
// events are encoded one at a time into one buffer (nats.go copies each
// message as it is published).
func (p *Publisher) send(batch []item) {
	nc := p.cfg.JS.Conn()
	// n events sent of the batch, for reqs requests; sums of them by
	// summaries.
	n, reqs, sums := 0, 0.0, 0
	for i, it := range batch {
		p.buf = appendEvent(p.buf[:0], it.ev)
		if i == len(batch)-1 {
			break
		}
		var err error
		if id := dedupID(it.msgID, it.ev); id != "" {
			err = nc.PublishMsg(msgOf(it.subject, it.msgID, it.ev, p.buf))
		} else {
			err = nc.Publish(it.subject, p.buf)
		}
		if err != nil {
			p.lost.Add(standsFor(it.ev))
			continue
		}
		n++
		reqs += standsFor(it.ev)
		sums += it.ev.Count
	}
	last := batch[len(batch)-1]
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckTimeout)
	defer cancel()
	if _, err := p.cfg.JS.PublishMsg(ctx, msgOf(last.subject, last.msgID, last.ev, p.buf)); err != nil {
		p.lost.Add(reqs + standsFor(last.ev))
		p.recoverStream(err)
		p.logNotStored.Warn().Int("events", n+1).Str("subject", last.subject).Str("err", err.Error()).Msg("audit events not stored")
		return
	}
	published.Add(float64(n + 1))
	if sums += last.ev.Count; sums > 0 {
		summarised.Add(float64(sums))
	}
}

// releaseAll releases the events of a batch sent and clears it.
func releaseAll(batch []item) {
	for i := range batch {
		release(batch[i].ev)
		batch[i] = item{}
	}
}

// Stop stops taking events and publishes what is buffered and the summaries
// of the windows still open, within ctx.
func (p *Publisher) Stop(ctx context.Context) error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true // nothing is put in the buffer any more: neither Publish nor sweep
		p.mu.Unlock()
		close(p.stopping)
		for _, it := range p.takeSummaries(time.Time{}, true) {
			select {
			case p.ch <- it:
			case <-ctx.Done():
				p.stopped.Add(standsFor(it.ev))
				release(it.ev)
			}
		}
		close(p.ch)
	})
	select {
	case <-p.done:
	case <-ctx.Done():
		return errors.New("audit: buffered events not published before the deadline")
	}
	// A Recover in progress ends within its own deadline (2× AckTimeout).
	rdone := make(chan struct{})
	go func() { p.recoverWG.Wait(); close(rdone) }()
	select {
	case <-rdone:
		return nil
	case <-ctx.Done():
		return errors.New("audit: re-creating the audit stream did not end before the deadline")
	}
}

// Fingerprinter computes fingerprints of served values.
type Fingerprinter struct{ key []byte }

// NewFingerprinter returns a fingerprinter under key (derived from the master
// key with HKDF, info FingerprintInfo).
func NewFingerprinter(key []byte) *Fingerprinter {
	return &Fingerprinter{key: append([]byte(nil), key...)}
}

// Sum is the fingerprint of value: hex HMAC-SHA256.
func (f *Fingerprinter) Sum(value []byte) string {
	if f == nil {
		return ""
	}
	m := hmac.New(sha256.New, f.key)
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil))
}
