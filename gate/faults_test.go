package gate_test

// Fault injection: the ledger's file system fails, Redis is paused or
// killed in the middle of a load. Whatever fails, the gate never answers
// 200 without a durable receipt and never runs what it could not record.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store/storetest"
	"github.com/redis/go-redis/v9"
)

// Ledger line prefixes (the on-disk format of receipts/scan.go).
const (
	intentLine  = `{"type":"intent",`
	receiptLine = `{"type":"receipt",`
)

// faultFS is the real file system whose ledger writes fail on demand: a
// group commit that contains a line starting with one of the armed
// prefixes fails with ENOSPC, as on a full disk.
type faultFS struct {
	receipts.OSFS
	mu    sync.Mutex // guards armed
	armed []string
	fails atomic.Int32
	// readsFail makes every ReadAt fail with EIO, as on a failing disk.
	readsFail atomic.Bool
}

func (f *faultFS) arm(prefixes ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = prefixes
}

func (f *faultFS) hit(p []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.armed {
		if bytes.HasPrefix(p, []byte(a)) || bytes.Contains(p, []byte("\n"+a)) {
			return true
		}
	}
	return false
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (receipts.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

type faultFile struct {
	receipts.File
	fs *faultFS
}

func (f *faultFile) ReadAt(p []byte, off int64) (int, error) {
	if f.fs.readsFail.Load() {
		return 0, &os.PathError{Op: "read", Path: "ledger", Err: syscall.EIO}
	}
	return f.File.ReadAt(p, off)
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.hit(p) {
		f.fs.fails.Add(1)
		return 0, &os.PathError{Op: "write", Path: "ledger", Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

// An intent that cannot be written: 503 ledger_unavailable and nothing
// runs (no grant is consumed, no receipt exists); the gate recovers as
// soon as the disk does.
func TestLedgerIntentWriteFailureRunsNothing(t *testing.T) {
	fs := &faultFS{}
	s := gatetest.NewServer(t, gatetest.WithLedgerFS(fs))
	a := newAgent(t, s, map[string]any{"budgets": map[string]any{"max_calls": 1}})

	fs.arm(intentLine)
	for i := range 3 {
		r := a.Execute("echo", map[string]any{"i": i}, nil)
		wantStatus(t, r, 503, "ledger_unavailable")
	}
	if fs.fails.Load() == 0 {
		t.Fatal("the fault was never injected")
	}
	if n, _ := s.Ledger.Stats(); n != 0 {
		t.Fatalf("receipts = %d after refused intents, want 0", n)
	}
	fs.arm()
	// The one call of the budget is still there: nothing was reserved.
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 403, "budget_exhausted")
	if v := s.Ledger.Verify(); !v.Intact {
		t.Fatalf("ledger not intact after write failures: %+v", v)
	}
}

// A receipt that cannot be written after the action ran: 500
// evidence_persistence_failed, never 200; a retry with the same
// Idempotency-Key gets the same answer and does not run again; on restart
// the intent becomes an interrupted receipt.
func TestLedgerReceiptWriteFailureBecomesInterrupted(t *testing.T) {
	fs := &faultFS{}
	state := t.TempDir()
	s := gatetest.NewServer(t, gatetest.WithLedgerFS(fs), gatetest.WithStateDir(state))
	a := newAgent(t, s, nil)

	fs.arm(receiptLine)
	idem := http.Header{"Idempotency-Key": {"k-evidence"}}
	r := a.Execute("echo", map[string]any{"x": 1}, idem)
	wantStatus(t, r, 500, "evidence_persistence_failed")
	traceID, _ := r.JSON()["trace_id"].(string)
	if traceID == "" {
		t.Fatalf("500 without trace_id: %s", r.Body)
	}
	fs.arm()
	r2 := a.Execute("echo", map[string]any{"x": 1}, idem)
	wantStatus(t, r2, 500, "evidence_persistence_failed")
	if n, _ := s.Ledger.Stats(); n != 0 {
		t.Fatalf("receipts = %d, want 0 (the retry must not run again)", n)
	}
	// Other requests still work once the disk is back.
	wantStatus(t, a.Execute("echo", map[string]any{"x": 2}, nil), 200, "")

	s.Close()
	s2 := gatetest.NewServer(t, gatetest.WithStateDir(state))
	if v := s2.Ledger.Verify(); !v.Intact {
		t.Fatalf("ledger after restart not intact: %+v", v)
	}
	kinds := ledgerKinds(t, state, traceID)
	if len(kinds) != 1 || kinds[0] != receipts.KindInterrupted {
		t.Fatalf("receipts for trace %s after restart = %v, want [interrupted]", traceID, kinds)
	}
}

// ledgerKinds returns the normalized_result.kind of each receipt line of
// the ledger in state that carries traceID.
func ledgerKinds(t *testing.T, state, traceID string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(state, "ledger", "ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kinds []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, receiptLine) || !strings.Contains(line, `"trace_id":"`+traceID+`"`) {
			continue
		}
		for _, k := range []string{receipts.KindSuccess, receipts.KindInterrupted, receipts.KindProviderFailure, receipts.KindInternalError} {
			if strings.Contains(line, `"kind":"`+k+`"`) {
				kinds = append(kinds, k)
			}
		}
	}
	return kinds
}

// load runs workers that execute echo until stop is closed and checks
// every answer: a 200 must name a receipt that is in the ledger; anything
// else must be one of the allowed error codes.
type load struct {
	t       *testing.T
	s       *gatetest.Server
	allowed map[string]bool
	mu      sync.Mutex // guards counts
	counts  map[string]int
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func startLoad(t *testing.T, s *gatetest.Server, agents []*gatetest.Agent, allowed ...string) *load {
	l := &load{t: t, s: s, allowed: map[string]bool{}, counts: map[string]int{}, stop: make(chan struct{})}
	t.Cleanup(func() { l.end() }) // before the gate's cleanup stops it
	for _, c := range allowed {
		l.allowed[c] = true
	}
	for w, ag := range agents {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				r := ag.Execute("echo", map[string]any{"w": w, "i": i}, nil)
				code := r.Code()
				if r.Status == 200 {
					code = "200"
					id, _ := r.JSON()["receipt_id"].(string)
					if _, err := s.Ledger.Get(id); err != nil {
						t.Errorf("200 without a durable receipt %q: %v", id, err)
					}
				} else if !l.allowed[code] {
					t.Errorf("unexpected answer under fault: %d %s", r.Status, r.Body)
				}
				l.mu.Lock()
				l.counts[code]++
				l.mu.Unlock()
				if r.Status != 200 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

func (l *load) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// waitFor waits (bounded) until code has been answered more than n times.
func (l *load) waitFor(code string, n int) {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for l.snapshot()[code] <= n {
		if time.Now().After(deadline) {
			l.t.Fatalf("no %q answer under load; answers so far: %v", code, l.snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) end() map[string]int {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.snapshot()
}

// redisPID returns the pid of the redis-server behind url (from INFO).
func redisPID(t *testing.T, url string) int {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("redis INFO: %v", err)
	}
	pid := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 {
		t.Fatalf("no process_id in INFO: %s", info)
	}
	return pid
}

func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %d: %v", pid, err)
	}
}

// Redis frozen (SIGSTOP) under load: requests end with 503
// store_unavailable (bounded by the store timeout, not hanging), none is
// a 200 without a receipt, and the gate serves again after SIGCONT.
func TestRedisPausedUnderLoad(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	s := gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithConfig(fastStoreConfig()))
	var agents []*gatetest.Agent
	for i := range 4 {
		agents = append(agents, newAgent(t, s, map[string]any{"agent_id": fmt.Sprintf("p%d", i)}))
	}
	pid := redisPID(t, url) // while Redis still answers
	l := startLoad(t, s, agents, "store_unavailable")
	l.waitFor("200", 10)
	signal(t, pid, syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	l.waitFor("store_unavailable", 3)
	before := l.snapshot()["200"]
	signal(t, pid, syscall.SIGCONT)
	l.waitFor("200", before+10)
	got := l.end()
	n, _ := s.Ledger.Stats()
	if n < got["200"] {
		t.Fatalf("ledger has %d receipts for %d acknowledged calls", n, got["200"])
	}
	t.Logf("answers with Redis paused mid-load: %v (receipts %d)", got, n)
}

// Redis killed under load and restarted empty: 503 store_unavailable while
// it is down; afterwards the old leases are refused (data loss never
// revives a session) and fresh leases work without restarting the gate.
func TestRedisKilledAndEmptiedUnderLoad(t *testing.T) {
	url, stop, restart := storetest.StartRedis(t)
	s := gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithConfig(fastStoreConfig()))
	var agents []*gatetest.Agent
	for i := range 4 {
		agents = append(agents, newAgent(t, s, map[string]any{"agent_id": fmt.Sprintf("k%d", i)}))
	}
	l := startLoad(t, s, agents, "store_unavailable", "invalid_lease")
	l.waitFor("200", 10)
	stop()
	l.waitFor("store_unavailable", 3)
	restart(true)
	l.waitFor("invalid_lease", 3)
	got := l.end()
	// No old lease runs after the data loss.
	for _, ag := range agents {
		wantStatus(t, ag.Execute("echo", map[string]any{}, nil), 401, "invalid_lease")
	}
	fresh := newAgent(t, s, map[string]any{"agent_id": "fresh"})
	wantStatus(t, fresh.Execute("echo", map[string]any{}, nil), 200, "")
	t.Logf("answers with Redis killed and emptied mid-load: %v", got)
}

// fastStoreConfig is the test gate's default config with a short store
// timeout, so a frozen Redis is noticed quickly.
func fastStoreConfig() gate.Config {
	return gate.Config{Dev: true, TrustAgentID: true, StoreTimeout: 300 * time.Millisecond}
}
