package export

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
)

// Export health (admin.exports.status, `cloudbridge export ls/get`).
//
// Design: what JetStream knows is read from JetStream when asked, and what
// only the workers know is shared through a KV bucket. The consumer's lag
// (pending plus ack-pending) comes from its consumer info, the dead letters
// from the dead-letter stream's per-subject count. Every worker keeps one
// record per export block it runs in the bucket <prefix>_export_status under
// <export>.<worker>: its last delivery, its last failed call with the cause,
// and its retries, written every StatusInterval while something changed (and
// refreshed at least every few intervals). The bucket's records expire
// (statusTTL), so a worker that is gone stops counting; any worker answers a
// status request for all of them. The records are the workers' own state,
// not a message of the contract; the reply (events.ExportStatusList) is.

// statusTTL is how long a worker's record outlives its last write.
const statusTTL = 24 * time.Hour

// workerStatus is one worker's record of one export block in the bucket.
type workerStatus struct {
	Export       string              `json:"export"`
	Worker       string              `json:"worker"`
	Updated      time.Time           `json:"updated"`
	LastDelivery *time.Time          `json:"last_delivery,omitempty"`
	LastError    *events.ExportError `json:"last_error,omitempty"`
	Retries      uint64              `json:"retries"`
}

// health is a runner's own counters.
type health struct {
	mu      sync.Mutex
	st      workerStatus
	changed bool
}

func (h *health) delivered(t time.Time) {
	h.mu.Lock()
	t = t.UTC()
	h.st.LastDelivery = &t
	h.changed = true
	h.mu.Unlock()
}

func (h *health) failed(t time.Time, err error, endpoint string, retried bool) {
	msg, cause := splitDetail(err)
	h.mu.Lock()
	h.st.LastError = &events.ExportError{Time: t.UTC(), Code: events.CodeOf(err), Message: msg, Cause: cause, Endpoint: endpoint}
	if retried {
		h.st.Retries++
	}
	h.changed = true
	h.mu.Unlock()
}

// snapshot returns the record and whether it changed since the last one.
func (h *health) snapshot(now time.Time) (workerStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, changed := h.st, h.changed
	h.changed = false
	st.Updated = now.UTC()
	return st, changed
}

// splitDetail splits events.Detail(err) into the error's message and the
// causes it wraps.
func splitDetail(err error) (msg, cause string) {
	msg = err.Error()
	d := events.Detail(err)
	if rest, ok := strings.CutPrefix(d, msg+" (cause: "); ok {
		cause = strings.TrimSuffix(rest, ")")
	}
	const maxCause = 512
	if len(cause) > maxCause {
		cause = strings.ToValidUTF8(cause[:maxCause], "") + "…"
	}
	return msg, cause
}

// warnLimiter lets one warning through per period and counts the others.
type warnLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether a warning may be logged now, with how many were
// suppressed since the last one.
func (l *warnLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

// endpointOf names where an export's sink calls go, for logs and status.
func endpointOf(sp spec) string {
	c := sp.conn
	switch {
	case c.AWS != nil:
		if c.AWS.Endpoint != "" {
			return c.AWS.Endpoint
		}
		return "https://logs." + c.AWS.Region + ".amazonaws.com"
	case c.GCP != nil:
		if c.GCP.Endpoint != "" {
			return c.GCP.Endpoint
		}
		return "logging.googleapis.com:443"
	}
	return "connection " + c.Name
}

// statusLoop refreshes the lag gauge from the consumer's info and writes the
// runner's record every period, until ctx ends.
func (r *runner) statusLoop(ctx context.Context, cons jetstream.Consumer, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	lastPut := time.Time{}
	for {
		r.refreshStatus(ctx, cons, &lastPut, period)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) refreshStatus(ctx context.Context, cons jetstream.Consumer, lastPut *time.Time, period time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, period)
	defer cancel()
	if info, err := cons.Info(cctx); err == nil {
		r.mLag.Set(float64(info.NumPending + uint64(max(info.NumAckPending, 0))))
		r.dd.checkConsumer(info.Created, info.Delivered.Stream) // created again mid-session? (ledger.go)
	}
	kv := r.w.statusKV
	if kv == nil {
		return
	}
	now := r.w.cfg.Now()
	st, changed := r.health.snapshot(now)
	if !changed && now.Sub(*lastPut) < 5*period {
		return
	}
	body, err := json.Marshal(st)
	if err != nil {
		return
	}
	if _, err := kv.Put(cctx, r.statusKey(), body); err != nil {
		r.log.Debug().Err(err).Msg("writing export status")
		r.health.mu.Lock()
		r.health.changed = true
		r.health.mu.Unlock()
		return
	}
	*lastPut = now
}

func (r *runner) statusKey() string { return r.name + "." + r.w.instance }

// Status answers admin.exports.status: the health of the export block name,
// or of every block this worker knows when name is empty.
func (w *Worker) Status(ctx context.Context, name string) (events.ExportStatusList, error) {
	w.mu.Lock()
	var names []string
	for n := range w.want {
		if name == "" || n == name {
			names = append(names, n)
		}
	}
	w.mu.Unlock()
	out := events.ExportStatusList{Exports: []events.ExportStatus{}}
	if name != "" && len(names) == 0 {
		return out, events.Errorf(events.CodeNotFound, "export %q: not found", name)
	}
	sort.Strings(names)
	records := w.statusRecords(ctx)
	dead := w.deadCounts(ctx)
	fresh := 3 * w.cfg.StatusInterval
	now := w.cfg.Now()
	for _, n := range names {
		st := events.ExportStatus{Export: n}
		if c, err := w.cfg.JS.Consumer(ctx, w.cfg.LogsStream, events.ExportConsumer(n)); err == nil {
			if info, err := c.Info(ctx); err == nil {
				st.Pending, st.AckPending = info.NumPending, uint64(max(info.NumAckPending, 0))
				st.Lag = st.Pending + st.AckPending
			}
		}
		for _, rec := range records[n] {
			if now.Sub(rec.Updated) <= fresh {
				st.Workers++
			}
			st.Retries += rec.Retries
			if rec.LastDelivery != nil && (st.LastDelivery == nil || rec.LastDelivery.After(*st.LastDelivery)) {
				st.LastDelivery = rec.LastDelivery
			}
			if rec.LastError != nil && (st.LastError == nil || rec.LastError.Time.After(st.LastError.Time)) {
				st.LastError = rec.LastError
			}
		}
		st.DeadLetters = dead[w.cfg.Subjects.Dead(n)]
		out.Exports = append(out.Exports, st)
	}
	return out, nil
}

// statusRecords reads every worker's records, by export.
func (w *Worker) statusRecords(ctx context.Context) map[string][]workerStatus {
	out := map[string][]workerStatus{}
	if w.statusKV == nil {
		return out
	}
	watch, err := w.statusKV.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return out
	}
	defer func() { _ = watch.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return out
		case e, ok := <-watch.Updates():
			if !ok || e == nil {
				return out
			}
			var rec workerStatus
			if json.Unmarshal(e.Value(), &rec) == nil && rec.Export != "" {
				out[rec.Export] = append(out[rec.Export], rec)
			}
		}
	}
}

// deadCounts is the dead-letter stream's message count per subject.
func (w *Worker) deadCounts(ctx context.Context) map[string]uint64 {
	s, err := w.cfg.JS.Stream(ctx, w.cfg.DeadStream)
	if err != nil {
		return nil
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(w.cfg.Subjects.DeadWildcard()))
	if err != nil {
		return nil
	}
	return info.State.Subjects
}

// forgetStatus deletes this worker's record of a removed export block.
func (w *Worker) forgetStatus(ctx context.Context, r *runner) {
	if w.statusKV == nil {
		return
	}
	if err := w.statusKV.Purge(ctx, r.statusKey()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		w.log.Debug().Str("export", r.name).Err(err).Msg("deleting export status")
	}
}
