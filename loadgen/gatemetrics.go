package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// GateTimes is where the gate itself says an execute's time went during
// the measured window: deltas of its Prometheus histograms, read from
// GET /metrics on its admin socket before and after the run. A gate that
// waits on its disk rather than on its CPU shows it here.
type GateTimes struct {
	// RequestMS is the mean time an execute spent in the gate's handler.
	RequestMS float64 `json:"request_ms"`
	// ReceiptAppendMS is the mean wait for the receipt to be durable (its
	// group commit); the intent before dispatch waits about as long.
	ReceiptAppendMS float64 `json:"receipt_append_ms"`
	// LedgerCommitsPerS and LedgerCommitMS are the ledger's group commits
	// and the mean write + fsync of one.
	LedgerCommitsPerS float64 `json:"ledger_commits_per_s"`
	LedgerCommitMS    float64 `json:"ledger_commit_ms"`
	// StoreFsyncsPerS and StoreFsyncMS are the embedded store's journal
	// fsyncs (zero with Redis).
	StoreFsyncsPerS float64 `json:"store_fsyncs_per_s"`
	StoreFsyncMS    float64 `json:"store_fsync_ms"`
	// SlowSyncs counts ledger commits and store fsyncs slower than
	// slowSync: a disk stall holds every request waiting on it.
	SlowSyncs int64 `json:"slow_syncs"`
	// SyncsOver10ms counts ledger commits and store fsyncs slower than
	// stallSync. Each holds the requests waiting on it past a 5 ms p99;
	// at 1,000 executes/s a few of them decide a 15 s run's p99.
	SyncsOver10ms int64 `json:"syncs_over_10ms"`
}

// slowSync and stallSync are the durations above which SlowSyncs and
// SyncsOver10ms count a commit or fsync: bucket bounds of the gate's
// histograms (seconds).
const (
	slowSync  = 0.1
	stallSync = 0.01
)

// executeRoute is the request_seconds label of the execute endpoint.
const executeRoute = "POST /v1/actions/{id}/execute"

// histo is one histogram's count, sum and counts above slowSync and
// stallSync.
type histo struct{ count, sum, slow, stalled float64 }

func (h histo) minus(o histo) histo {
	return histo{count: h.count - o.count, sum: h.sum - o.sum, slow: h.slow - o.slow, stalled: h.stalled - o.stalled}
}

// meanMS is the mean observation in milliseconds, or 0 without any.
func (h histo) meanMS() float64 {
	if h.count <= 0 {
		return 0
	}
	return round3(h.sum / h.count * 1000)
}

// gateMetrics is the part of a /metrics scrape that GateTimes needs.
type gateMetrics struct {
	execute, appends, commits, fsyncs histo
}

// scrapeGate reads the gate's /metrics over its admin socket.
func scrapeGate(ctx context.Context, adminSocket string) (gateMetrics, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", adminSocket)
		},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://gate/metrics", nil)
	if err != nil {
		return gateMetrics{}, err
	}
	res, err := c.Do(req)
	if err != nil {
		return gateMetrics{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return gateMetrics{}, fmt.Errorf("GET /metrics on %s: %s", adminSocket, res.Status)
	}
	return parseGateMetrics(res.Body)
}

// parseGateMetrics picks the histograms GateTimes needs out of the
// Prometheus text exposition in r. A histogram the gate does not have
// (the store's fsyncs with Redis) reads as empty.
func parseGateMetrics(r io.Reader) (gateMetrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return gateMetrics{}, fmt.Errorf("parse /metrics: %w", err)
	}
	var m gateMetrics
	m.execute = histogramOf(fams["latchgate_request_seconds"], "route", executeRoute)
	m.appends = histogramOf(fams["latchgate_ledger_append_seconds"], "", "")
	m.commits = histogramOf(fams["latchgate_ledger_commit_seconds"], "", "")
	m.fsyncs = histogramOf(fams["latchgate_store_fsync_seconds"], "", "")
	return m, nil
}

// histogramOf returns the histogram of f whose label name has value (any
// series when name is empty).
func histogramOf(f *dto.MetricFamily, name, value string) histo {
	if f == nil {
		return histo{}
	}
	for _, m := range f.GetMetric() {
		if name != "" && !hasLabel(m, name, value) {
			continue
		}
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		out := histo{count: float64(h.GetSampleCount()), sum: h.GetSampleSum()}
		out.slow = out.count - cumulativeAt(h, slowSync)
		out.stalled = out.count - cumulativeAt(h, stallSync)
		return out
	}
	return histo{}
}

// cumulativeAt is how many of h's observations are known to be at most
// bound: the count of the largest bucket whose upper bound is at most
// bound (buckets are cumulative).
func cumulativeAt(h *dto.Histogram, bound float64) float64 {
	below := 0.0
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() <= bound {
			below = float64(b.GetCumulativeCount())
		}
	}
	return below
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// gateTimes is what happened between two scrapes over elapsed.
func gateTimes(before, after gateMetrics, elapsed time.Duration) *GateTimes {
	ex, ap := after.execute.minus(before.execute), after.appends.minus(before.appends)
	co, fs := after.commits.minus(before.commits), after.fsyncs.minus(before.fsyncs)
	perS := func(n float64) float64 {
		if elapsed <= 0 {
			return 0
		}
		return round3(n / elapsed.Seconds())
	}
	return &GateTimes{
		RequestMS: ex.meanMS(), ReceiptAppendMS: ap.meanMS(),
		LedgerCommitsPerS: perS(co.count), LedgerCommitMS: co.meanMS(),
		StoreFsyncsPerS: perS(fs.count), StoreFsyncMS: fs.meanMS(),
		SlowSyncs: int64(co.slow + fs.slow), SyncsOver10ms: int64(co.stalled + fs.stalled),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
