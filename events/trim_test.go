package events

import (
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
