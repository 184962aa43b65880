// Package metrics holds cloudbridge's Prometheus collectors, registered on one
// registry that the HTTP endpoint serves.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cloudbridge/cloudbridge/events"
)

// Registry is the registry served on /metrics.
var Registry = prometheus.NewRegistry()

var (
	// Requests counts requests by endpoint and wire code ("ok" on success).
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_requests_total", Help: "Requests handled, by endpoint and result code.",
	}, []string{"endpoint", "code"})
	// RequestDuration is the handling latency by endpoint.
	RequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudbridge_request_duration_seconds", Help: "Request handling latency, by endpoint.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"endpoint"})
	// Cache counts cache outcomes: hit, miss, stale.
	Cache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_cache_total", Help: "Cache lookups by result (hit, miss, stale, refresh).",
	}, []string{"result"})
	// CacheEntries is the number of cached values.
	CacheEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cloudbridge_cache_entries", Help: "Values held in this worker's cache.",
	})
	// Upstream counts calls to clouds by provider, operation and outcome.
	Upstream = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_upstream_calls_total", Help: "Calls to cloud APIs, by provider, operation and outcome.",
	}, []string{"provider", "operation", "outcome"})
	// UpstreamDuration is the latency of calls to clouds.
	UpstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudbridge_upstream_call_duration_seconds", Help: "Latency of calls to cloud APIs.",
		Buckets: prometheus.DefBuckets,
	}, []string{"provider", "operation"})
)

// Log export collectors.
var (
	ExportEventsIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_events_in_total", Help: "Log events read from the stream, by export.",
	}, []string{"export"})
	ExportEventsExported = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_events_exported_total", Help: "Log events accepted by the sink, by export.",
	}, []string{"export"})
	ExportDroppedLevel = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_events_dropped_level_total", Help: "Log events below min_level, acked and not exported.",
	}, []string{"export"})
	ExportDead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_events_dead_total", Help: "Log events sent to the dead-letter stream, by reason.",
	}, []string{"export", "reason"})
	ExportRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_retries_total", Help: "Sink calls retried, by export and reason (throttled, unavailable, too_new).",
	}, []string{"export", "reason"})
	ExportBatchEvents = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudbridge_export_batch_events", Help: "Events per delivered batch.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8),
	}, []string{"export"})
	ExportBatchBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudbridge_export_batch_bytes", Help: "Bytes per delivered batch.",
		Buckets: prometheus.ExponentialBuckets(256, 4, 8),
	}, []string{"export"})
	ExportConsumerLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cloudbridge_export_consumer_lag", Help: "Messages pending for the export's durable consumer.",
	}, []string{"export"})
	ExportRedeliveriesSuppressed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_redeliveries_suppressed_total",
		Help: "Redelivered messages whose event a sink call had already accepted (this worker or a peer): acked, not delivered again.",
	}, []string{"export"})
	ExportLedgerDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_ledger_dropped_total",
		Help: "Ranges of accepted sequences dropped from the redelivery ledger past its cap, before their window ended.",
	}, []string{"export"})
	ExportAcceptedIgnored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_accepted_ignored_total",
		Help: "Accepted-sequence broadcasts (or ranges) ignored, by reason (malformed, other_export, other_incarnation, ahead_of_consumer).",
	}, []string{"export", "reason"})
	ExportStopAbandoned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_export_stop_abandoned_total",
		Help: "Events held by batches a stop left behind because a sink call outlived its deadline (no longer kept alive: redelivered after AckWait unless the call acks them).",
	}, []string{"export"})
)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		Requests, RequestDuration, Cache, CacheEntries, Upstream, UpstreamDuration,
		ExportEventsIn, ExportEventsExported, ExportDroppedLevel, ExportDead, ExportRetries,
		ExportBatchEvents, ExportBatchBytes, ExportConsumerLag,
		ExportRedeliveriesSuppressed, ExportLedgerDropped, ExportAcceptedIgnored, ExportStopAbandoned)
}

// Outcome is the label value for err: "ok" or its wire code.
func Outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(events.CodeOf(err))
}

// ObserveUpstream records one call to a cloud API that started at start.
func ObserveUpstream(provider, operation string, start time.Time, err error) {
	Upstream.WithLabelValues(provider, operation, Outcome(err)).Inc()
	UpstreamDuration.WithLabelValues(provider, operation).Observe(time.Since(start).Seconds())
}

// RegistryRollbackRefused counts sealed records refused because their
// generation is older than one this worker has seen for the same key (an old
// value written back into a bucket), by bucket.
var RegistryRollbackRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cloudbridge_registry_rollback_refused_total",
	Help: "Sealed records refused as older than one already seen for their key (replayed), by bucket.",
}, []string{"bucket"})

// RegistryBucketRecreated counts the registry buckets found created again
// while the worker ran (deleted, then created anew), whose watched view was
// reloaded from the new bucket, by bucket.
var RegistryBucketRecreated = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cloudbridge_registry_bucket_recreated_total",
	Help: "Registry buckets found created again while the worker ran, their view reloaded, by bucket.",
}, []string{"bucket"})

func init() { Registry.MustRegister(RegistryRollbackRefused, RegistryBucketRecreated) }
