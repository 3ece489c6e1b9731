package loadgen

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// exposition is the gate's /metrics text for the histograms GateTimes
// reads (buckets cut down), with another route and an unrelated family.
// execs executes took 2 ms each, their receipt appends appendSum seconds
// in all; stalledCommits ledger commits took 10–50 ms, slowCommits
// ledger commits and slowFsyncs store fsyncs more than 100 ms.
func exposition(execs, appendSum float64, stalledCommits, slowCommits, slowFsyncs int) string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	commits, fsyncs := f(float64(100+stalledCommits+slowCommits)), f(float64(10+slowFsyncs))
	upTo100 := f(float64(100 + stalledCommits))
	return strings.Join([]string{
		`# TYPE latchgate_request_seconds histogram`,
		`latchgate_request_seconds_bucket{route="GET /v1/receipts/{id}",le="+Inf"} 7`,
		`latchgate_request_seconds_sum{route="GET /v1/receipts/{id}"} 70`,
		`latchgate_request_seconds_count{route="GET /v1/receipts/{id}"} 7`,
		`latchgate_request_seconds_bucket{route="POST /v1/actions/{id}/execute",le="+Inf"} ` + f(execs),
		`latchgate_request_seconds_sum{route="POST /v1/actions/{id}/execute"} ` + f(execs*0.002),
		`latchgate_request_seconds_count{route="POST /v1/actions/{id}/execute"} ` + f(execs),
		`# TYPE latchgate_ledger_append_seconds histogram`,
		`latchgate_ledger_append_seconds_bucket{le="+Inf"} ` + f(execs),
		`latchgate_ledger_append_seconds_sum ` + f(appendSum),
		`latchgate_ledger_append_seconds_count ` + f(execs),
		`# TYPE latchgate_ledger_commit_seconds histogram`,
		`latchgate_ledger_commit_seconds_bucket{le="0.005"} 90`,
		`latchgate_ledger_commit_seconds_bucket{le="0.01"} 100`,
		`latchgate_ledger_commit_seconds_bucket{le="0.05"} ` + upTo100,
		`latchgate_ledger_commit_seconds_bucket{le="0.1"} ` + upTo100,
		`latchgate_ledger_commit_seconds_bucket{le="0.5"} ` + commits,
		`latchgate_ledger_commit_seconds_bucket{le="+Inf"} ` + commits,
		`latchgate_ledger_commit_seconds_sum 0.5`,
		`latchgate_ledger_commit_seconds_count ` + commits,
		`# TYPE latchgate_store_fsync_seconds histogram`,
		`latchgate_store_fsync_seconds_bucket{le="0.01"} 10`,
		`latchgate_store_fsync_seconds_bucket{le="0.1"} 10`,
		`latchgate_store_fsync_seconds_bucket{le="+Inf"} ` + fsyncs,
		`latchgate_store_fsync_seconds_sum 0.1`,
		`latchgate_store_fsync_seconds_count ` + fsyncs,
		`# TYPE latchgate_decisions_total counter`,
		`latchgate_decisions_total{outcome="allow"} 5`,
		``,
	}, "\n")
}

// TestGateTimes: the deltas of two scrapes become per-execute means and
// per-second rates; only the execute route counts; commits and fsyncs
// above 10 ms and above 100 ms are counted from the cumulative buckets.
func TestGateTimes(t *testing.T) {
	before, err := parseGateMetrics(strings.NewReader(exposition(1000, 1, 1, 0, 1)))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseGateMetrics(strings.NewReader(exposition(3000, 4, 8, 2, 4)))
	if err != nil {
		t.Fatal(err)
	}
	got := gateTimes(before, after, 2*time.Second)
	want := GateTimes{
		RequestMS:       2,   // 2 ms each
		ReceiptAppendMS: 1.5, // 3 s over 2,000 appends
		// The commit and fsync histograms' counts grew by the stalled and
		// slow ones.
		LedgerCommitsPerS: 4.5, LedgerCommitMS: 0,
		StoreFsyncsPerS: 1.5, StoreFsyncMS: 0,
		SlowSyncs:     2 + 3,
		SyncsOver10ms: 7 + 2 + 3,
	}
	if *got != want {
		t.Errorf("gateTimes = %+v, want %+v", *got, want)
	}
}

// TestParseGateMetricsRedis: a gate without the store's fsync histogram
// (Redis) reads as zero fsyncs, and text that is not the exposition
// format is an error, not zeros.
func TestParseGateMetricsRedis(t *testing.T) {
	text := exposition(10, 0.01, 0, 0, 0)
	text = text[:strings.Index(text, "# TYPE latchgate_store_fsync_seconds")]
	m, err := parseGateMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m.fsyncs != (histo{}) || m.execute.count != 10 || m.commits.count != 100 {
		t.Errorf("parse = %+v, want no fsyncs, 10 executes, 100 commits", m)
	}
	if _, err := parseGateMetrics(strings.NewReader("<html>not metrics</html>\n")); err == nil {
		t.Error("parse(HTML) = nil error, want one")
	}
}
