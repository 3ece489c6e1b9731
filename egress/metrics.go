package egress

import "github.com/prometheus/client_golang/prometheus"

// Metrics records egress decisions. Implementations must be safe for
// concurrent use.
type Metrics interface {
	// Decision counts one decision: decision is a Decision* constant and
	// reason a Reason* constant.
	Decision(decision, reason string)
}

type noopMetrics struct{}

func (noopMetrics) Decision(string, string) {}

// PromMetrics counts decisions in latchgate_egress_decisions_total{decision,reason}.
type PromMetrics struct {
	decisions *prometheus.CounterVec
}

// NewPromMetrics registers the egress counter with reg.
func NewPromMetrics(reg prometheus.Registerer) (*PromMetrics, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "latchgate_egress_decisions_total",
		Help: "Egress decisions by outcome (allow, deny, error) and reason.",
	}, []string{"decision", "reason"})
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return &PromMetrics{decisions: c}, nil
}

// Decision implements Metrics.
func (m *PromMetrics) Decision(decision, reason string) {
	m.decisions.WithLabelValues(decision, reason).Inc()
}

var (
	_ Metrics = noopMetrics{}
	_ Metrics = (*PromMetrics)(nil)
)
