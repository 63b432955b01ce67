package authz

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/metric"
)

// Metrics holds the Prometheus collectors of this package. A nil *Metrics
// records nothing, so every use is optional.
type Metrics struct {
	decisions *prometheus.CounterVec
	fetches   *prometheus.CounterVec
	cache     *prometheus.CounterVec
	keys      atomic.Pointer[KeyProvider]

	// Pre-resolved children: the hot path must not hash label values.
	fetchOK, fetchFail, cacheHit, cacheMiss prometheus.Counter
	allowOK                                 prometheus.Counter // the common decision, resolved once
}

// NewMetrics registers the package's collectors on reg under namespace
// (e.g. "orders"):
//
//	<ns>_authz_decisions_total{result,reason}  allow/deny per reason
//	<ns>_authz_key_fetches_total{result}       JWKS fetches: success/failure
//	<ns>_authz_key_age_seconds                 age of the keys being served
//	<ns>_authz_token_cache_total{result}       verified-token cache hit/miss
func NewMetrics(reg prometheus.Registerer, namespace string) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("authz: nil prometheus registerer")
	}
	name := func(n string) string { return prometheus.BuildFQName(namespace, "authz", n) }
	m := &Metrics{
		decisions: metric.CounterVec(name("decisions_total"),
			"Authorization decisions by result (allow, deny) and reason.", "result", "reason"),
		fetches: metric.CounterVec(name("key_fetches_total"),
			"JWKS fetches by result (success, failure).", "result"),
		cache: metric.CounterVec(name("token_cache_total"),
			"Verified-token cache lookups by result (hit, miss).", "result"),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: name("key_age_seconds"),
		Help: "Age of the signing keys being served (-1 when none are loaded).",
	}, func() float64 {
		p := m.keys.Load()
		if p == nil {
			return -1
		}
		st := p.State()
		if st.LastSuccess.IsZero() {
			return -1
		}
		return st.Age.Seconds()
	})
	if err := metric.Register(reg, m.decisions, m.fetches, m.cache, age); err != nil {
		return nil, err
	}
	m.fetchOK = m.fetches.WithLabelValues("success")
	m.fetchFail = m.fetches.WithLabelValues("failure")
	m.cacheHit = m.cache.WithLabelValues("hit")
	m.cacheMiss = m.cache.WithLabelValues("miss")
	m.allowOK = m.decisions.WithLabelValues("allow", "ok")
	return m, nil
}

func (m *Metrics) attachKeys(p *KeyProvider) {
	if m != nil {
		m.keys.Store(p)
	}
}

func (m *Metrics) keyFetch(ok bool) {
	if m != nil {
		either(ok, m.fetchOK, m.fetchFail).Inc()
	}
}

func (m *Metrics) cacheLookup(hit bool) {
	if m != nil {
		either(hit, m.cacheHit, m.cacheMiss).Inc()
	}
}

// either returns yes if b holds, else no.
func either(b bool, yes, no prometheus.Counter) prometheus.Counter {
	if b {
		return yes
	}
	return no
}

// Decision records one authorization decision; result is "allow" or "deny".
// Exported so that other transports (natsauth) count into the same series.
func (m *Metrics) Decision(result, reason string) {
	if m == nil {
		return
	}
	if result == "allow" && reason == "ok" {
		m.allowOK.Inc()
		return
	}
	m.decisions.WithLabelValues(result, reason).Inc()
}

// CacheCounter returns the token-cache counter for result "hit" or "miss"
// (tests and dashboards).
func (m *Metrics) CacheCounter(result string) prometheus.Counter {
	return m.cache.WithLabelValues(result)
}
