package rotation

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// Collectors, registered on metrics.Registry (served on /metrics).
var (
	metricEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_rotation_events_total",
		Help: "Secret change events received, by connection, event type and result (invalidated, duplicate, ignored, foreign, malformed, failed).",
	}, []string{"conn", "type", "result"})
	metricInvalidations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_rotation_invalidations_total",
		Help: "Secrets invalidated because of a change event, by connection and kind (changed, deleted, restored).",
	}, []string{"conn", "kind"})
	metricDelay = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cloudbridge_rotation_delay_seconds",
		Help:    "Delay from a change event's time (as the cloud reports it) to its invalidation.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 900},
	}, []string{"conn"})
	metricDegraded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cloudbridge_rotation_degraded",
		Help: "1 while a connection's change-event consumer cannot receive (its secrets use the short degraded TTL), else 0.",
	}, []string{"conn"})
	metricReceiveErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_rotation_receive_errors_total",
		Help: "Failed receives from a connection's queue or subscription.",
	}, []string{"conn"})
	metricAckErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudbridge_rotation_ack_errors_total",
		Help: "Handled change events that could not be deleted or acknowledged (they are delivered again).",
	}, []string{"conn"})
)

func init() {
	metrics.Registry.MustRegister(metricEvents, metricInvalidations, metricDelay, metricDegraded,
		metricReceiveErrors, metricAckErrors)
}
