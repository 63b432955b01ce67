package metric_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authmesh/authmesh/pkg/authz/metric"
)

func TestDeclareAndRegister(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	c := metric.CounterVec("things_total", "Things by kind.", "kind")
	h := metric.HistogramVec("thing_seconds", "Time per thing.", []float64{.1, 1}, "kind")
	if err := metric.Register(reg, c, h); err != nil {
		t.Fatal(err)
	}
	c.WithLabelValues("a").Add(2)
	h.WithLabelValues("a").Observe(.5)
	want := `
# HELP things_total Things by kind.
# TYPE things_total counter
things_total{kind="a"} 2
# HELP thing_seconds Time per thing.
# TYPE thing_seconds histogram
thing_seconds_bucket{kind="a",le="0.1"} 0
thing_seconds_bucket{kind="a",le="1"} 1
thing_seconds_bucket{kind="a",le="+Inf"} 1
thing_seconds_sum{kind="a"} 0.5
thing_seconds_count{kind="a"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// A second registration of a name is returned, not panicked, and stops
// there: the collectors after it are not registered.
func TestRegisterReturnsTheFirstError(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if err := metric.Register(reg, metric.CounterVec("dup_total", "One.", "k")); err != nil {
		t.Fatal(err)
	}
	later := metric.CounterVec("later_total", "Later.", "k")
	err := metric.Register(reg, metric.CounterVec("dup_total", "One.", "k"), later)
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("err = %v, want AlreadyRegisteredError", err)
	}
	if reg.Unregister(later) {
		t.Fatal("a collector after the failed one was registered")
	}
}
