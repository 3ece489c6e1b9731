package events

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// TestJournalTrimBackoff: when every event is younger than MaxAge, a trim
// keeps them all, and the next trim must wait until the journal doubled;
// before, the whole file was re-read and rewritten (and held in memory)
// every SyncInterval once it passed CompactBytes.
func TestJournalTrimBackoff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j, err := Open(Config{Path: path, CompactBytes: 4096}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	due := func() (bool, int64) {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.needsTrimLocked(), j.size
	}
	n := 0
	for ok, _ := due(); !ok; ok, _ = due() {
		if _, err := j.Append(ApprovalRequested, map[string]string{"approval_id": "a"}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := j.trim(); err != nil {
		t.Fatalf("trim = %v", err)
	}
	ok, size := due()
	if ok {
		t.Errorf("needsTrim right after a trim that kept %d bytes = true, want false", size)
	}
	var ids []int64
	scan(path, func(e Event) bool { ids = append(ids, e.ID); return true })
	if len(ids) != n || ids[0] != 1 || ids[n-1] != int64(n) {
		t.Fatalf("after trim: %d events %v…, want all %d (none older than MaxAge)", len(ids), ids[:min(3, len(ids))], n)
	}
	for {
		ok, s := due()
		if s > 2*size {
			if !ok {
				t.Errorf("needsTrim at %d bytes (> 2 × %d) = false, want true", s, size)
			}
			break
		}
		if ok {
			t.Fatalf("needsTrim at %d bytes = true, want false until > %d", s, 2*size)
		}
		if _, err := j.Append(ApprovalRequested, map[string]string{"approval_id": "a"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestJournalTrimKeepsEventsAppendedDuringScan: events appended while a
// trim scans the file (more than the memory window holds) all reach the
// new file; before, the tail was rebuilt from the window and lost the rest.
func TestJournalTrimKeepsEventsAppendedDuringScan(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j, err := Open(Config{Path: path, Recent: 4, MaxAge: time.Hour}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Append(ApprovalRequested, nil) // older than MaxAge at the trim: dropped
	clk.Advance(2 * time.Hour)
	for range 3 {
		j.Append(ApprovalApproved, nil)
	}
	const during = 50
	j.afterScan = func() {
		for range during {
			if _, err := j.Append(ReceiptCreated, map[string]int{"n": 1}); err != nil {
				t.Error(err)
			}
		}
	}
	if err := j.trim(); err != nil {
		t.Fatalf("trim = %v", err)
	}
	j.afterScan = nil
	last, _ := j.Append(ApprovalDenied, nil)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	scan(path, func(e Event) bool { ids = append(ids, e.ID); return true })
	if len(ids) != int(last.ID-1) || ids[0] != 2 {
		t.Fatalf("file ids after trim = %v (%d), want 2…%d with none missing", ids, len(ids), last.ID)
	}
	for i, id := range ids {
		if id != int64(i+2) {
			t.Fatalf("file ids after trim = %v: gap at %d", ids, i)
		}
	}
	j.mu.Lock()
	size := j.size
	j.mu.Unlock()
	if st, err := os.Stat(path); err != nil || st.Size() != size {
		t.Errorf("file size %v (%v), journal size %d: want equal", st.Size(), err, size)
	}
}

// TestJournalTrimSkipsYoungJournal: when the oldest event is within
// MaxAge, a trim drops nothing, so it must not read and rewrite the file
// (it only moves the next trim on); a journal that starts with an old
// event is still rewritten.
func TestJournalTrimSkipsYoungJournal(t *testing.T) {
	for _, old := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "events.log")
		clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		j, err := Open(Config{Path: path, MaxAge: time.Hour}, clk, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		j.Append(ApprovalRequested, nil)
		if old {
			clk.Advance(2 * time.Hour)
		}
		for range 10 {
			j.Append(ReceiptCreated, map[string]int{"n": 1})
		}
		if err := j.Sync(); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(path)
		if err := j.trim(); err != nil {
			t.Fatalf("trim = %v", err)
		}
		after, _ := os.Stat(path)
		if rewritten := !os.SameFile(before, after); rewritten != old {
			t.Errorf("old first event %v: file rewritten = %v, want %v", old, rewritten, old)
		}
		j.mu.Lock()
		due := j.needsTrimLocked()
		j.mu.Unlock()
		if due {
			t.Errorf("old first event %v: a trim is due right after one", old)
		}
		j.Close()
	}
}

// TestJournalTrimCapsBytes: events all younger than MaxAge are still
// trimmed to MaxBytes, oldest first, so the file stays bounded at any
// event rate; the newest events and ids survive, and a reopen continues
// after the last id.
func TestJournalTrimCapsBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j, err := Open(Config{Path: path, CompactBytes: 4096, MaxBytes: 8192}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	const n = 400 // ≈ 40 KB of events, all within MaxAge
	for i := range n {
		if _, err := j.Append(ReceiptCreated, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.trim(); err != nil {
		t.Fatalf("trim = %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 8192 {
		t.Errorf("journal after trim = %d bytes, want at most MaxBytes = 8192", st.Size())
	}
	var ids []int64
	scan(path, func(e Event) bool { ids = append(ids, e.ID); return true })
	if len(ids) == 0 || ids[len(ids)-1] != n || ids[0] <= 1 {
		t.Fatalf("after trim: ids %d…%d (%d), want the newest up to %d, the oldest gone", ids[0], ids[len(ids)-1], len(ids), n)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("after trim: ids not contiguous at %d: %d then %d", i, ids[i-1], ids[i])
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := Open(Config{Path: path, CompactBytes: 4096, MaxBytes: 8192}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	e, err := j2.Append(ReceiptCreated, map[string]int{"n": n})
	if err != nil || e.ID != n+1 {
		t.Fatalf("append after reopen = id %d (%v), want %d", e.ID, err, n+1)
	}
}

// TestJournalTornTailLongerThanAChunk: a torn last line is cut on open
// even when it is longer than one backward read (64 KiB), and the intact
// lines before it stay.
func TestJournalTornTailLongerThanAChunk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j, err := Open(Config{Path: path}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := j.Append(ApprovalRequested, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	intact, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	torn := append([]byte(`{"id":4,"type":"approval.requested","data":"`), make([]byte, 200<<10)...)
	for i := 45; i < len(torn); i++ {
		torn[i] = 'x'
	}
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()
	j2, err := Open(Config{Path: path}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if st, _ := os.Stat(path); st.Size() != intact.Size() {
		t.Errorf("journal after open = %d bytes, want the %d intact ones", st.Size(), intact.Size())
	}
	if e, err := j2.Append(ApprovalRequested, map[string]int{"n": 3}); err != nil || e.ID != 4 {
		t.Fatalf("append after the cut = id %d (%v), want 4", e.ID, err)
	}
}
