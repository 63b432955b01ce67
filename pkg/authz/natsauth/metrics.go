package natsauth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmesh_nats_requests_total",
			Help: "NATS micro requests by service, endpoint, authorization result and reason.",
		}, []string{"service", "endpoint", "result", "reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmesh_events_total",
			Help: "JetStream events by consumer and result (accepted, rejected, retried) with the reason.",
		}, []string{"consumer", "result", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmesh_events_dead_lettered_total",
			Help: "Events published to the dead-letter subject, by consumer and reason.",
		}, []string{"consumer", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "authmesh_event_processing_seconds",
			Help:    "Time to verify and handle one event delivery.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"consumer", "result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.events, m.deadLettered, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
