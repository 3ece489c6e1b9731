package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// diskFixture is a ledger with a small index window and what it should hold.
type diskFixture struct {
	dir      string
	window   int
	receipts map[string][]byte // receipt id → stored bytes
	approval map[string]string // approval id → newest receipt id
	audits   []AuditRecord     // in seq order
}

func openWindow(tb testing.TB, dir string, window int) *Ledger {
	tb.Helper()
	l, err := Open(Config{Dir: dir, GateID: "gate-test", indexWindow: window},
		Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatalf("Open(%s) = %v", dir, err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// uuidFor gives a canonical UUID for i (half the receipts use one, half
// another id form, so both key kinds land in runs).
func uuidFor(i int) string {
	return fmt.Sprintf("0190d6a4-%04x-7abc-8def-%012x", i%0xffff, i)
}

// add appends receipts [from, to) and one decision record per receipt.
// Every third receipt has an approval; approval ids repeat every 5 of
// those, so a newer receipt takes an approval id over.
func (fx *diskFixture) add(t *testing.T, l *Ledger, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		r := sampleReceipt(i)
		if i%2 == 0 {
			r.ReceiptID = uuidFor(i)
		}
		if i%3 == 0 {
			aid := fmt.Sprintf("appr-%d", (i/3)%5)
			r.Approval = &Approval{Kind: "operator", ApprovalID: aid, ApprovedBy: "op", ApprovedAt: FormatTime(t0)}
			fx.approval[aid] = r.ReceiptID
		}
		got := mustAppend(t, l, r)
		b := storedForm(t, got)
		fx.receipts[r.ReceiptID] = b
		a := AuditRecord{Principal: fmt.Sprintf("p%d", i%3), ActionID: "echo", Decision: DecisionAllow}
		if i%4 == 0 {
			a.Decision = DecisionDeny
		}
		if err := l.AppendAudit(context.Background(), &a); err != nil {
			t.Fatal(err)
		}
		fx.audits = append(fx.audits, a)
	}
}

// waitMerged waits until the background mergers have nothing left to do.
func waitMerged(t *testing.T, l *Ledger) {
	t.Helper()
	waitIdle(t, l.byID, l.byApproval)
}

// waitIdle waits until every index's merger has nothing left to do.
func waitIdle(tb testing.TB, xs ...*diskIDIndex) {
	tb.Helper()
	for range 5000 {
		if !slices.ContainsFunc(xs, func(x *diskIDIndex) bool { return !x.idle() }) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	tb.Fatal("index merges did not finish")
}

// idle reports whether the merger has nothing left to do: every frozen
// window written, no runs to merge.
func (x *diskIDIndex) idle() bool {
	x.mu.RLock()
	frozen := len(x.frozen)
	x.mu.RUnlock()
	a, _ := x.pickMerge()
	return frozen == 0 && a == nil
}

func (fx *diskFixture) check(t *testing.T, l *Ledger) {
	t.Helper()
	for id, want := range fx.receipts {
		raw, err := l.Get(id)
		if err != nil || string(raw) != string(want) {
			t.Fatalf("Get(%q) = %.60s…, %v, want the stored bytes", id, raw, err)
		}
	}
	for aid, rid := range fx.approval {
		r, err := l.FindByApproval(aid)
		if err != nil || r.ReceiptID != rid {
			t.Fatalf("FindByApproval(%q) = %v, %v, want receipt %s (the newest)", aid, r, err, rid)
		}
	}
	for _, id := range []string{uuidFor(1 << 20), "rcpt-x", "", "appr-0"} {
		if _, err := l.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := l.FindByApproval("appr-9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("FindByApproval(appr-9) = %v, want ErrNotFound", err)
	}
	if n, na := l.Stats(); n != len(fx.receipts) || na != len(fx.audits) {
		t.Errorf("Stats() = %d, %d, want %d, %d", n, na, len(fx.receipts), len(fx.audits))
	}
	queries := []struct {
		name string
		q    AuditQuery
		keep func(a *AuditRecord) bool
	}{
		{"all, max limit", AuditQuery{Limit: MaxAuditLimit}, func(*AuditRecord) bool { return true }},
		{"principal", AuditQuery{Principal: "p1", Limit: MaxAuditLimit}, func(a *AuditRecord) bool { return a.Principal == "p1" }},
		{"deny, limit 7", AuditQuery{Decision: DecisionDeny, Limit: 7}, func(a *AuditRecord) bool { return a.Decision == DecisionDeny }},
	}
	for _, q := range queries {
		var want []int64
		for i := len(fx.audits) - 1; i >= 0 && len(want) < max(q.q.Limit, 1); i-- {
			if q.keep(&fx.audits[i]) {
				want = append(want, fx.audits[i].Seq)
			}
		}
		raws, err := l.QueryAudit(q.q)
		if err != nil {
			t.Fatalf("QueryAudit(%s) = %v", q.name, err)
		}
		var got []int64
		for _, raw := range raws {
			var a AuditRecord
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			got = append(got, a.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("QueryAudit(%s) seqs = %v, want %v", q.name, got, want)
		}
	}
}

func newFixture(dir string, window int) *diskFixture {
	return &diskFixture{dir: dir, window: window, receipts: map[string][]byte{}, approval: map[string]string{}}
}

// TestDiskIndexLookups crosses the window boundary and several runs, with
// both id forms, approval ids taken over by newer receipts, audit entries
// spilled to disk, duplicates refused, and a reopen.
func TestDiskIndexLookups(t *testing.T) {
	for _, window := range []int{1, 4, 7, 1024} {
		t.Run(fmt.Sprintf("window=%d", window), func(t *testing.T) {
			dir := t.TempDir()
			fx := newFixture(dir, window)
			l := openWindow(t, dir, window)
			fx.add(t, l, 0, 90)
			fx.check(t, l)
			waitMerged(t, l)
			fx.check(t, l)
			if window < 90 {
				l.byID.mu.RLock()
				runs := len(l.byID.runs)
				l.byID.mu.RUnlock()
				if runs == 0 || l.spill.n == 0 {
					t.Errorf("runs = %d, audit spilled = %d, want both > 0", runs, l.spill.n)
				}
			}
			for _, id := range []string{uuidFor(0), "rcpt-0001", uuidFor(88), "rcpt-0089"} {
				r := sampleReceipt(1000)
				r.ReceiptID = id
				if _, err := l.Append(context.Background(), r); !errors.Is(err, ErrDuplicate) {
					t.Errorf("Append(duplicate %s) = %v, want ErrDuplicate", id, err)
				}
			}
			l.Close()
			l = openWindow(t, dir, window)
			fx.check(t, l)
			fx.add(t, l, 90, 100)
			fx.check(t, l)
			if res := l.Verify(); !res.Intact {
				t.Errorf("Verify() = %+v", res.FirstBreak)
			}
		})
	}
}

// TestDiskIndexFilesRebuilt damages the index files between runs: Open
// rebuilds them from the ledger, so every lookup stays right.
func TestDiskIndexFilesRebuilt(t *testing.T) {
	const window = 4
	eachIndexFile := func(t *testing.T, dir string, fn func(path string, size int64)) {
		files, err := filepath.Glob(filepath.Join(dir, indexDirName, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("index files = %v, %v, want some", files, err)
		}
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			fn(f, st.Size())
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir, behind string)
	}{
		{"missing", func(t *testing.T, dir, _ string) {
			if err := os.RemoveAll(filepath.Join(dir, indexDirName)); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, dir, _ string) {
			eachIndexFile(t, dir, func(p string, n int64) { os.Truncate(p, n/2+5) })
		}},
		{"corrupt", func(t *testing.T, dir, _ string) {
			eachIndexFile(t, dir, func(p string, n int64) {
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(i*7 + 3)
				}
				os.WriteFile(p, b, 0o600)
			})
		}},
		{"behind", func(t *testing.T, dir, behind string) {
			os.RemoveAll(filepath.Join(dir, indexDirName))
			if err := os.Rename(behind, filepath.Join(dir, indexDirName)); err != nil {
				t.Fatal(err)
			}
		}},
		{"stray files", func(t *testing.T, dir, _ string) {
			os.WriteFile(filepath.Join(dir, indexDirName, "receipt-99999999.run"), make([]byte, 240), 0o600)
			os.WriteFile(filepath.Join(dir, indexDirName, "junk"), []byte("x"), 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fx := newFixture(dir, window)
			l := openWindow(t, dir, window)
			fx.add(t, l, 0, 20)
			l.Close()
			behind := filepath.Join(t.TempDir(), "index")
			if err := os.CopyFS(behind, os.DirFS(filepath.Join(dir, indexDirName))); err != nil {
				t.Fatal(err)
			}
			l = openWindow(t, dir, window)
			fx.add(t, l, 20, 40)
			l.Close()
			tt.damage(t, dir, behind)
			l = openWindow(t, dir, window)
			fx.check(t, l)
			fx.add(t, l, 40, 45)
			fx.check(t, l)
		})
	}
}

// TestDiskIndexTornTail: the index files name receipts whose ledger lines
// were torn off (never covered by the signed head). After Open those
// receipts are not found, the rest are, and their ids can be used again.
func TestDiskIndexTornTail(t *testing.T) {
	const window = 2
	dir := t.TempDir()
	fx := newFixture(dir, window)
	l := openWindow(t, dir, window)
	fx.add(t, l, 0, 10)
	l.Close()
	headPath := filepath.Join(dir, headFileName)
	oldHead, err := os.ReadFile(headPath)
	if err != nil {
		t.Fatal(err)
	}
	good := fileSize(t, dir)
	kept := *fx
	kept.receipts, kept.approval = maps(fx.receipts), maps(fx.approval)
	kept.audits = slices.Clone(fx.audits)

	l = openWindow(t, dir, window)
	fx.add(t, l, 10, 30)
	l.Close()
	// Simulate a crash before the head of the later records was written,
	// with the tail of the ledger torn in the middle of a line.
	if err := os.WriteFile(headPath, oldHead, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ledgerPath(dir), good+300); err != nil {
		t.Fatal(err)
	}
	l = openWindow(t, dir, window)
	kept.check(t, l)
	for i := 10; i < 30; i++ {
		id := sampleReceipt(i).ReceiptID
		if i%2 == 0 {
			id = uuidFor(i)
		}
		if _, err := l.Get(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(torn %s) = %v, want ErrNotFound", id, err)
		}
	}
	kept.add(t, l, 10, 15) // the same ids again: not duplicates
	kept.check(t, l)
}

func maps[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestDiskIndexRunEntriesVerified plants bad entries in a newer run: one
// past the committed ledger, and ones naming another record's offset. They
// are ignored: lookups find the right record or none.
func TestDiskIndexRunEntriesVerified(t *testing.T) {
	const window = 3
	dir := t.TempDir()
	fx := newFixture(dir, window)
	l := openWindow(t, dir, window)
	fx.add(t, l, 0, 12)
	waitMerged(t, l)

	otherOff, ok, err := l.byID.get(sampleReceipt(11).ReceiptID, func(int64) (bool, error) { return true, nil })
	if err != nil || !ok {
		t.Fatalf("offset of rcpt-0011 = %v, %v", ok, err)
	}
	l.mu.RLock()
	past := l.committed + 10
	l.mu.RUnlock()
	bad := []runEntry{
		{indexKey("ghost"), past},
		{indexKey(uuidFor(0)), otherOff},
		{indexKey("rcpt-0001"), otherOff},
		{indexKey("rcpt-0001"), 1},
		{indexKey("appr-0"), otherOff},
	}
	slices.SortFunc(bad, compareEntries)
	for _, x := range []*diskIDIndex{l.byID, l.byApproval} {
		r, err := x.writeRun(bad)
		if err != nil {
			t.Fatal(err)
		}
		x.mu.Lock()
		x.runs = append(x.runs, r)
		x.mu.Unlock()
	}
	for _, id := range []string{"ghost", "rcpt-x"} {
		if _, err := l.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := l.FindByApproval("ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("FindByApproval(ghost) = %v, want ErrNotFound", err)
	}
	fx.check(t, l)
}

// TestDiskIndexMatchesModel drives an index with random puts (repeated ids
// included, as approval ids repeat) and random windows, and compares every
// lookup with a map, while the merger runs.
func TestDiskIndexMatchesModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			x := newDiskIDIndex(OSFS{}, t.TempDir(), "model", 1+rnd.IntN(50), zerolog.Nop())
			defer x.close()
			recordID := map[int64]string{} // what the "ledger" holds at each offset
			model := map[string]int64{}
			var ids []string
			match := func(id string) func(int64) (bool, error) {
				return func(off int64) (bool, error) { return recordID[off] == id, nil }
			}
			for i := range 3000 {
				var id string
				switch {
				case len(ids) > 0 && rnd.IntN(4) == 0:
					id = ids[rnd.IntN(len(ids))]
				case rnd.IntN(2) == 0:
					id = uuidFor(rnd.IntN(1 << 30))
				default:
					id = fmt.Sprintf("id-%d", rnd.IntN(1<<30))
				}
				off := int64(i) * 100
				recordID[off] = id
				if _, seen := model[id]; !seen {
					ids = append(ids, id)
				}
				model[id] = off
				x.put(id, off)
				x.flush()
				if i%97 == 0 {
					for _, id := range ids {
						off, ok, err := x.get(id, match(id))
						if err != nil || !ok || off != model[id] {
							t.Fatalf("after %d puts: get(%s) = %d, %v, %v, want %d", i+1, id, off, ok, err, model[id])
						}
					}
					if _, ok, _ := x.get("absent", match("absent")); ok {
						t.Fatal("get(absent) found an entry")
					}
				}
			}
		})
	}
}

// TestDiskIndexMemoryPerRecord measures the live heap the indexes keep
// per execute (one receipt, one decision record) once the window is full:
// it must stay near zero (fences: 16 B per 128 receipts).
func TestDiskIndexMemoryPerRecord(t *testing.T) {
	const window, warm, n = 1024, 8 * 1024, 98 * 1024 // whole windows: the same window fill at both marks
	l := &Ledger{cfg: Config{Dir: t.TempDir(), indexWindow: window}, fs: OSFS{}, log: zerolog.Nop(),
		audit: newAuditIndex(DefaultInternCap)}
	if err := l.openIndexes(); err != nil {
		t.Fatal(err)
	}
	defer l.closeIndexes()
	meta := recordMeta{Time: FormatTime(t0), Principal: "uid:1000", ActionID: "echo", Decision: DecisionAllow}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			l.byID.put(uuidFor(i), int64(i)*1000)
			l.audit.add(int64(i)*1000+700, &meta)
			l.flushIndexes()
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	add(0, warm)
	waitMerged(t, l)
	before := heap()
	add(warm, n)
	waitMerged(t, l)
	after := heap()
	per := (float64(after) - float64(before)) / float64(n-warm)
	t.Logf("index heap per execute beyond the window: %.2f B (%d executes, window %d)", per, n, window)
	if per > 8 {
		t.Errorf("index heap per execute beyond the window = %.2f B, want < 8 B", per)
	}
	if got, audit := l.byID.len(), l.spill.n+len(l.audit.entries); got != n || audit != n {
		t.Errorf("index sizes = %d receipts, %d audit entries, want %d each", got, audit, n)
	}
}

// unreadable is a run file that fails every read.
type unreadable struct{ File }

func (unreadable) ReadAt([]byte, int64) (int, error) { return 0, errors.New("read") }

// TestDiskIndexRunRangeSkipsReads: a key outside a run's [first, last]
// range is answered without reading the run (the duplicate check of every
// new receipt, whose UUIDv7 id is newer than every run), and a key inside
// it still reads the run.
func TestDiskIndexRunRangeSkipsReads(t *testing.T) {
	x := newDiskIDIndex(OSFS{}, t.TempDir(), "range", 4, zerolog.Nop())
	defer x.close()
	for i := 10; i < 30; i++ {
		x.put(uuidFor(i), int64(i))
		x.flush()
	}
	waitIdle(t, x)
	x.mu.Lock()
	for _, r := range x.runs {
		r.f = unreadable{r.f}
	}
	x.mu.Unlock()
	none := func(int64) (bool, error) { return false, nil }
	for _, id := range []string{uuidFor(5), uuidFor(31), "0190d6a4-ffff-7abc-8def-ffffffffffff", "00000000-0000-7000-8000-000000000000"} {
		if _, ok, err := x.get(id, none); ok || err != nil {
			t.Errorf("get(%s) outside every run = %v, %v; want not found without a read", id, ok, err)
		}
	}
	if _, _, err := x.get(uuidFor(17), none); err == nil {
		t.Error("get of a key inside a run did not read it")
	}
}

// heldRunsFS holds every run file's creation until release is closed.
type heldRunsFS struct {
	OSFS
	release chan struct{}
}

func (h heldRunsFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if strings.HasSuffix(name, ".run") {
		<-h.release
	}
	return h.OSFS.OpenFile(name, flag, perm)
}

// TestDiskIndexFlushDoesNotWrite: a full window is frozen and written by
// the merger, so the ledger's writer never waits for a run to be sorted
// and written; lookups find the frozen entries meanwhile and the run
// afterwards.
func TestDiskIndexFlushDoesNotWrite(t *testing.T) {
	fs := heldRunsFS{release: make(chan struct{})}
	x := newDiskIDIndex(fs, t.TempDir(), "held", 4, zerolog.Nop())
	released := false
	defer func() {
		if !released {
			close(fs.release)
		}
		x.close()
	}()
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for i := range 2 * 4 { // two full windows: frozen, not written (maxFrozen is 2)
			x.put(uuidFor(i), int64(i))
			x.flush()
		}
	}()
	select {
	case <-flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("flush waited for a run file while the merger could not write it")
	}
	check := func(when string) {
		for i := range 2 * 4 {
			match := func(off int64) (bool, error) { return off == int64(i), nil }
			if off, ok, err := x.get(uuidFor(i), match); !ok || err != nil || off != int64(i) {
				t.Fatalf("%s: get(%d) = %d, %v, %v", when, i, off, ok, err)
			}
		}
	}
	check("frozen")
	close(fs.release)
	released = true
	waitIdle(t, x)
	x.mu.RLock()
	frozen, runs := len(x.frozen), len(x.runs)
	x.mu.RUnlock()
	if frozen != 0 || runs == 0 {
		t.Fatalf("after release: %d frozen windows, %d runs; want 0 and > 0", frozen, runs)
	}
	check("written")
}
