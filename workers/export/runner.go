package export

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// runner runs one export block: fetch, batch (batch.go), deliver, ack
// (deliver.go), retry (retry.go).
type runner struct {
	w    *Worker
	spec spec
	name string
	log  zerolog.Logger

	fetchCtx    context.Context // canceled to stop fetching
	stopFetch   context.CancelFunc
	flushCtx    context.Context // canceled when the stop deadline passes
	cancelFlush context.CancelFunc
	done        chan struct{}

	sink  Sink
	lim   limits     // batch limits
	retry backoff    // retry policy
	alive *keepAlive // InProgress for the messages of submitted batches
	dd    *dedupe    // redelivery suppression (ledger.go)

	endpoint string      // where the sink's calls go, for logs and status
	health   health      // this worker's counters, shared through the status bucket
	warn     warnLimiter // rate-limits delivery warnings
	removed  atomic.Bool // the block was removed: abandoned batches are not a shutdown

	mIn, mExported, mDropped prometheus.Counter
	mBatchEvents, mBatchSize prometheus.Observer
	mLag                     prometheus.Gauge // pending + ack-pending, from the consumer's info (health.go)

	sizing logevent.Record // the record prepare sizes (batch.go); the session's collector alone uses it
}

func newRunner(w *Worker, sp spec) *runner {
	name := sp.exp.Name
	r := &runner{
		w: w, spec: sp, name: name, done: make(chan struct{}),
		log:          w.log.With().Str("export", name).Logger(),
		retry:        backoff{min: w.cfg.RetryMin, max: w.cfg.RetryMax},
		alive:        newKeepAlive(),
		mIn:          metrics.ExportEventsIn.WithLabelValues(name),
		mExported:    metrics.ExportEventsExported.WithLabelValues(name),
		mDropped:     metrics.ExportDroppedLevel.WithLabelValues(name),
		mBatchEvents: metrics.ExportBatchEvents.WithLabelValues(name),
		mBatchSize:   metrics.ExportBatchBytes.WithLabelValues(name),
		mLag:         metrics.ExportConsumerLag.WithLabelValues(name),
		endpoint:     endpointOf(sp),
		warn:         warnLimiter{every: w.cfg.WarnEvery},
	}
	r.health.st = workerStatus{Export: name, Worker: w.instance}
	r.dd = newDedupe(r)
	r.fetchCtx, r.stopFetch = context.WithCancel(context.Background())
	r.flushCtx, r.cancelFlush = context.WithCancel(context.Background())
	return r
}

// stop stops fetching and waits for the in-flight batch to be flushed; when
// ctx ends first, or at once when now is set, the flush is abandoned (its
// messages are nak'ed). It returns at most stopGrace after that: when a sink
// call ignores its context and is still running then, the runner stops
// keeping its batches alive (their messages come back after AckWait, to any
// worker; a late success still acks them), counts and logs them, and stop
// says so in its error.
func (r *runner) stop(ctx context.Context, now bool) error {
	r.stopFetch()
	if now {
		r.cancelFlush()
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	}
	r.cancelFlush()
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-r.done:
		return ctx.Err()
	case <-t.C:
		n := r.alive.abandon()
		// Counted first: whoever sees the ledger closed finds the count.
		metrics.ExportStopAbandoned.WithLabelValues(r.name).Add(float64(n))
		r.dd.close() // the session has not returned: its ledger stops now (ledger.go)
		r.log.Warn().Int("events", n).Dur("grace", stopGrace).
			Msg("a sink call outlived the stop deadline: its batches are no longer kept alive; what it does not ack comes back after AckWait")
		return fmt.Errorf("%w (a sink call still running %s later; its batches held %d events, no longer kept alive: what it does not ack comes back after AckWait)", ctx.Err(), stopGrace, n)
	}
}

// run waits for the runner it replaces (after, may be nil), sets up the sink
// and the consumer, retrying with backoff until they work, and consumes until
// stopped.
func (r *runner) run(after <-chan struct{}) {
	defer close(r.done)
	defer r.cancelFlush()
	defer func() {
		if r.sink != nil {
			if err := r.sink.Close(); err != nil {
				r.log.Debug().Err(err).Msg("closing sink")
			}
		}
	}()
	if after != nil {
		select {
		case <-after:
		case <-r.fetchCtx.Done():
			return
		}
	}
	for attempt := 0; r.fetchCtx.Err() == nil; attempt++ {
		err := r.session()
		if err == nil || r.fetchCtx.Err() != nil {
			return
		}
		r.log.Error().Str("err", events.Detail(err)).Msg("export interrupted; retrying")
		sleep(r.fetchCtx, r.retry.delay(attempt))
	}
}

func (r *runner) session() error {
	w := r.w
	if r.sink == nil {
		sink, err := w.cfg.Sinks(r.fetchCtx, r.spec.exp, r.spec.conn)
		if err != nil {
			return fmt.Errorf("creating sink: %w", err)
		}
		r.sink = sink
		r.lim = newLimits(sink.Limits(), r.spec.exp.Batch)
	}
	cons, err := w.cfg.JS.CreateOrUpdateConsumer(r.fetchCtx, w.streamOf(r.spec.exp), jetstream.ConsumerConfig{
		Durable:        events.ExportConsumer(r.name),
		Description:    "cloudbridge log export " + r.name,
		FilterSubjects: r.spec.exp.Subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.cfg.AckWait,
		MaxDeliver:     -1,
		// Room for every worker to hold a batch being flushed and one being filled.
		MaxAckPending: max(4*r.lim.maxEvents, 1000) * 4,
	})
	if err != nil {
		return fmt.Errorf("creating consumer: %w", err)
	}
	// The collector pulls only into a free batch (batch.go): back-pressure
	// without a client-side buffer, memory bounded by the batches.
	stopAlive := r.alive.run(w.cfg.AckWait / 3)
	defer stopAlive()
	defer r.dd.start(cons, w.streamOf(r.spec.exp))()
	sctx, stopStatus := context.WithCancel(r.fetchCtx)
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); r.statusLoop(sctx, cons, w.cfg.StatusInterval) }()
	defer func() { stopStatus(); <-statusDone }()
	c := &collector{r: r, p: newPipeline(r), cons: cons, pull: newPuller(w.cfg.JS, cons)}
	r.log.Info().Msg("export running")
	if err := c.run(r.fetchCtx); err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	return nil
}
