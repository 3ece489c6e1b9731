package events

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/rs/zerolog"
)

func TestJournalDurableIDsAndResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	open := func() *Journal {
		j, err := Open(Config{Path: path, Recent: 2}, clk, zerolog.Nop())
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		return j
	}
	j := open()
	for i := range 5 {
		if e, err := j.Append(ApprovalRequested, map[string]int{"n": i}); err != nil || e.ID != int64(i+1) {
			t.Fatalf("Append #%d = %d, %v, want id %d", i, e.ID, err, i+1)
		}
	}
	j.Close()
	// A torn last line (crash mid-write) is ignored.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte(`{"id":6,"type":"x"`))
	f.Close()
	j = open()
	defer j.Close()
	if e, _ := j.Append(ReceiptCreated, nil); e.ID != 6 {
		t.Fatalf("Append after restart id = %d, want 6", e.ID)
	}
	cases := []struct {
		name  string
		after int64
		want  []int64
	}{
		{"from_file", 0, []int64{1, 2, 3, 4, 5, 6}},
		{"from_file_mid", 3, []int64{4, 5, 6}},
		{"from_memory", 5, []int64{6}},
		{"caught_up", 6, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, wake, err := j.Since(c.after, 100)
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("Since(%d) = %d events, %v, want %v", c.after, len(got), err, c.want)
			}
			for i, e := range got {
				if e.ID != c.want[i] {
					t.Fatalf("Since(%d)[%d].ID = %d, want %d", c.after, i, e.ID, c.want[i])
				}
			}
			if wake == nil {
				t.Fatalf("Since(%d) wake = nil", c.after)
			}
		})
	}
	_, wake, _ := j.Since(6, 10)
	j.Append(ApprovalDenied, nil)
	select {
	case <-wake:
	default:
		t.Fatalf("Append did not close the wake channel")
	}
}

func TestJournalTrimKeepsNewest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j, err := Open(Config{Path: path, MaxAge: time.Hour}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Append(ApprovalRequested, nil)
	clk.Advance(2 * time.Hour)
	j.Append(ApprovalApproved, nil)
	if err := j.trim(); err != nil {
		t.Fatalf("trim = %v", err)
	}
	e, _ := j.Append(ApprovalDenied, nil)
	if err := j.Sync(); err != nil { // Append buffers; Sync writes the file read below
		t.Fatalf("Sync = %v", err)
	}
	var ids []int64
	scan(path, func(e Event) bool { ids = append(ids, e.ID); return true })
	if e.ID != 3 || len(ids) != 2 || ids[0] != 2 || ids[1] != 3 {
		t.Fatalf("after trim: new id %d, file ids %v, want 3 and [2 3]", e.ID, ids)
	}
}

// Appends past the memory window stay O(1) amortised and Since still
// serves the window from memory.
func BenchmarkAppendPastWindow(b *testing.B) {
	j, err := Open(Config{Recent: 4096}, clock.NewFake(time.Now()), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	for b.Loop() {
		if _, err := j.Append(ReceiptCreated, map[string]int{"n": 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRecentWindowAcrossTrims(t *testing.T) {
	j, err := Open(Config{Recent: 4}, clock.NewFake(time.Now()), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := 0; i < 50; i++ {
		if _, err := j.Append(ReceiptCreated, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			continue
		}
		// The newest 4 are always served, in order, ending at the last id.
		got, _, err := j.Since(j.Last()-4, 10)
		if err != nil || len(got) != 4 || got[3].ID != j.Last() || got[0].ID != j.Last()-3 {
			t.Fatalf("after %d appends Since(last-4) = %d events %v, err %v", i+1, len(got), got, err)
		}
	}
}
