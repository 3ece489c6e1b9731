package gate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gate's Prometheus series.
type metrics struct {
	requests  *prometheus.CounterVec
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	policy    prometheus.Histogram
	cacheHits prometheus.Counter
	store     prometheus.Histogram
	ledger    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchgate_requests_total", Help: "Requests by route and outcome code.",
		}, []string{"route", "code"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchgate_decisions_total", Help: "Execute decisions by outcome.",
		}, []string{"decision"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "latchgate_request_seconds", Help: "Request latency by route.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"route"}),
		policy: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "latchgate_policy_eval_seconds", Help: "Policy evaluation time.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .01, .1},
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latchgate_policy_cache_hits_total",
			Help: "Policy decisions answered from the exact decision cache (of latchgate_policy_eval_seconds_count).",
		}),
		store: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "latchgate_store_seconds", Help: "Store round-trip time (authentication).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .01, .1},
		}),
		ledger: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "latchgate_ledger_append_seconds", Help: "Receipt append time (durable).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .1},
		}),
	}
	reg.MustRegister(m.requests, m.decisions, m.latency, m.policy, m.cacheHits, m.store, m.ledger)
	return m
}
