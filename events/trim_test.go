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
