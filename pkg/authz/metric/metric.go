// Package metric declares and registers Prometheus collectors the one way
// authmesh's packages and services do: a name, a help line and label names
// per collector, registered on the caller's registry with the first error
// returned (never a panic: two registrations of one name are the caller's to
// report).
package metric

import "github.com/prometheus/client_golang/prometheus"

// CounterVec is a counter named name, partitioned by labels.
func CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// HistogramVec is a histogram named name with buckets, partitioned by labels.
func HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Register registers every collector on reg and returns the first error.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
