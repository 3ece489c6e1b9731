package main

// Process-level fault and abuse tests on the real binary.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

// slowUpstream serves one held-open endpoint and counts its hits.
func slowUpstream(t *testing.T) (mdir string, hits *atomic.Int32, hit chan struct{}, args []string) {
	t.Helper()
	hits = &atomic.Int32{}
	hit = make(chan struct{}, 16)
	release := make(chan struct{})
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hit <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), ReadHeaderTimeout: time.Second}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(uln) }()
	t.Cleanup(func() { close(release); _ = up.Close() })
	port := uln.Addr().(*net.TCPAddr).Port
	mdir = t.TempDir()
	manifest := fmt.Sprintf(`action_id: slow_fetch
version: 1.0.0
risk_level: low
input_schema: {type: object}
executor:
  kind: http
  method: GET
  url: http://127.0.0.1:%d/slow
  allow_insecure_http: true
  timeout_seconds: 60
egress:
  profile: proxy_allowlist
  allowed_domains: ["127.0.0.1"]
  allowed_ports: [%d]
`, port, port)
	if err := os.WriteFile(filepath.Join(mdir, "slow_fetch.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	return mdir, hits, hit, []string{"--manifests-dir", mdir, "--egress-allow-cidr", "127.0.0.1/32"}
}

func quietClient(t *testing.T, socket, agent string) *sdk.Client {
	t.Helper()
	c, err := sdk.New(sdk.WithSocket(socket), sdk.WithAgentID(agent), sdk.WithLogger(slog.New(slog.DiscardHandler)),
		sdk.WithRetry(sdk.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kill -9 while an idempotent request is dispatched: after restart the
// same Idempotency-Key never runs the action again, and the cut-off
// execution is an interrupted receipt.
func TestKill9IdempotentRequestNeverRunsTwice(t *testing.T) {
	_, hits, hit, args := slowUpstream(t)
	state := t.TempDir()
	p := startGate(t, state, args...)
	p.waitReady(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		c := quietClient(t, p.socket, "idem")
		_, _ = c.Execute(ctx, "slow_fetch", map[string]any{"n": 1}, sdk.WithIdempotencyKey("once-only"))
	}()
	select {
	case <-hit:
	case <-time.After(20 * time.Second):
		t.Fatalf("the idempotent request never reached the upstream\n%s", p.logs())
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	cancel()

	q := startGate(t, state, args...)
	q.waitReady(t)
	c := quietClient(t, q.socket, "idem")
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	_, err := c.Execute(rctx, "slow_fetch", map[string]any{"n": 1}, sdk.WithIdempotencyKey("once-only"))
	// PROTOCOL §3.4: a key left running by a crash resolves to the
	// interrupted receipt.
	var e *sdk.Error
	if !errors.Is(err, sdk.ErrActionFailed) || !errors.As(err, &e) || e.ReceiptID == "" {
		t.Fatalf("retry of a key cut off by kill -9 = %v, want 502 with the interrupted receipt", err)
	}
	out, code := cli(t, "receipts", "show", e.ReceiptID, "--admin-socket", q.admin)
	if code != 0 || !strings.Contains(out, `"kind": "interrupted"`) {
		t.Fatalf("receipt %s for the cut-off request = %s, want kind interrupted", e.ReceiptID, out)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("upstream hit %d times, want 1: the idempotent request ran again after the crash", n)
	}
	if out, code := cli(t, "receipts", "verify", "--admin-socket", q.admin); code != 0 {
		t.Fatalf("ledger after kill -9: %s", out)
	}
	t.Logf("retry after kill -9 answered %d %s; upstream hits %d", e.Status, e.Code, hits.Load())
}

// rss returns the resident set size of pid in KiB (from /proc).
func rss(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Thousands of hostile requests (oversized bodies, deep nesting, garbage
// proofs, header floods): every one gets an error, the gate stays ready,
// and its memory stays bounded (generous bound; the numbers are logged).
func TestHostileLoadMemoryBounded(t *testing.T) {
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	pid := p.cmd.Process.Pid
	c := unixHTTP(p.socket)
	deep := []byte(strings.Repeat("[", 10000) + strings.Repeat("]", 10000))
	big := bytes.Repeat([]byte("a"), 2<<20)
	send := func(path string, body []byte, h http.Header) int {
		req, _ := http.NewRequest("POST", "http://localhost"+path, bytes.NewReader(body))
		req.Header = h
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("hostile request: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	badAuth := http.Header{"Authorization": {"DPoP " + strings.Repeat("x.", 3000)}, "DPoP": {strings.Repeat("A", 4000)}}
	round := func() {
		for _, tc := range []struct {
			path string
			body []byte
			h    http.Header
		}{
			{"/v1/leases", deep, jsonCT},
			{"/v1/leases", big, jsonCT},
			{"/v1/actions/echo/execute", deep, badAuth},
			{"/v1/actions/echo/execute", big, badAuth},
			{"/v1/actions/echo/execute", []byte(`{}`), badAuth},
		} {
			if st := send(tc.path, tc.body, tc.h); st < 400 {
				t.Fatalf("hostile request to %s answered %d", tc.path, st)
			}
		}
	}
	round() // warm up
	before := rss(t, pid)
	for range 200 {
		round()
	}
	after := rss(t, pid)
	if st, _ := p.get("/readyz"); st != 200 {
		t.Fatalf("gate not ready after hostile load: %d", st)
	}
	t.Logf("RSS before %d KiB, after 1000 hostile requests %d KiB (Δ %+d KiB)", before, after, after-before)
	if after > before+256<<10 {
		t.Fatalf("RSS grew from %d to %d KiB under hostile load", before, after)
	}
}
