package natsauth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/metric"
)

// Metrics holds this package's Prometheus collectors. Create one per
// registry and pass it to every Service and Consumer of the process.
type Metrics struct {
	requests     *prometheus.CounterVec
	events       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
}

// NewMetrics registers the collectors on reg.
//
//	authmesh_nats_requests_total{service,endpoint,result,reason}   micro decisions
//	authmesh_events_total{consumer,result,reason}                  events accepted / rejected / retried
//	authmesh_events_dead_lettered_total{consumer,reason}           events sent to the DLQ
//	authmesh_event_processing_seconds{consumer,result}             verification + handler time
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("natsauth: metrics: nil registerer")
	}
	m := &Metrics{
		requests: metric.CounterVec("authmesh_nats_requests_total",
			"NATS micro requests by service, endpoint, authorization result and reason.",
			"service", "endpoint", "result", "reason"),
		events: metric.CounterVec("authmesh_events_total",
			"JetStream events by consumer and result (accepted, rejected, retried) with the reason.",
			"consumer", "result", "reason"),
		deadLettered: metric.CounterVec("authmesh_events_dead_lettered_total",
			"Events published to the dead-letter subject, by consumer and reason.",
			"consumer", "reason"),
		latency: metric.HistogramVec("authmesh_event_processing_seconds",
			"Time to verify and handle one event delivery.",
			prometheus.ExponentialBuckets(0.0005, 2, 16), "consumer", "result"),
	}
	if err := metric.Register(reg, m.requests, m.events, m.deadLettered, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}
