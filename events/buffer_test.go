package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// TestAppendEventMatchesMarshal: the hand-written line is the one
// json.Marshal wrote before, so old journals and new ones read alike.
func TestAppendEventMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.UTC)
	data := func(v any) json.RawMessage {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		e    Event
	}{
		{"receipt", Event{ID: 1, Type: ReceiptCreated, At: at, Data: data(map[string]any{"receipt_id": "r", "ledger_head": map[string]int{"seq": 9}})}},
		{"nil_data", Event{ID: 2, Type: ApprovalDenied, At: at, Data: data(nil)}},
		{"escaped_data", Event{ID: 1 << 40, Type: ApprovalRequested, At: at, Data: data(map[string]string{"reason": "<b>&\"\\\n\u2028\xff"})}},
		{"odd_type", Event{ID: 3, Type: "x<\"\x01é", At: at.In(time.FixedZone("x", -3600)), Data: data([]int{1, 2})}},
		{"zero_time", Event{ID: 4, Type: WebhookTest, Data: data("s")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := json.Marshal(c.e)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, '\n')
			got, err := appendEvent([]byte("prefix"), c.e)
			if err != nil {
				t.Fatalf("appendEvent = %v", err)
			}
			if !bytes.Equal(got[len("prefix"):], want) {
				t.Errorf("appendEvent =\n%s\nwant (json.Marshal)\n%s", got[len("prefix"):], want)
			}
		})
	}
}

func openQuiet(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := Open(Config{Path: path, SyncInterval: time.Hour, Recent: 2}, clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), zerolog.Nop())
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func fileIDs(t *testing.T, path string) []int64 {
	t.Helper()
	var ids []int64
	if err := scan(path, func(e Event) bool { ids = append(ids, e.ID); return true }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestJournalReaderSeesWrittenEvents: an event given to a reader (SSE,
// webhooks) is in the file at that moment, without Sync or Close, so a
// crash of the process cannot reissue an id a reader already holds (the
// webhook outbox stores its cursor durably).
func TestJournalReaderSeesWrittenEvents(t *testing.T) {
	cases := []struct {
		name  string
		after int64
		want  int // events returned; then all 5 must be in the file
	}{
		{"from_memory", 4, 1},
		{"from_file", 0, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.log")
			j := openQuiet(t, path)
			for i := range 5 {
				if _, err := j.Append(ReceiptCreated, map[string]int{"n": i}); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := j.Since(c.after, 100)
			if err != nil || len(got) != c.want || got[len(got)-1].ID != 5 {
				t.Fatalf("Since(%d) = %v, %v, want %d events ending at 5", c.after, got, err, c.want)
			}
			if ids := fileIDs(t, path); len(ids) != 5 || ids[4] != 5 {
				t.Fatalf("file after Since(%d) holds ids %v, want 1…5", c.after, ids)
			}
			// A journal opened on the file now (as after kill -9) goes on from 5.
			j2 := openQuiet(t, path)
			if e, err := j2.Append(ApprovalDenied, nil); err != nil || e.ID != 6 {
				t.Fatalf("Append after reopen = %d, %v, want id 6", e.ID, err)
			}
		})
	}
}

// failFile points the journal at /dev/full, where every write fails with
// ENOSPC, and returns a function that points it back at path.
func failFile(t *testing.T, j *Journal, path string) (restore func()) {
	t.Helper()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	j.mu.Lock()
	good := j.f
	j.f = full
	j.mu.Unlock()
	t.Cleanup(func() { good.Close() })
	return func() {
		j.mu.Lock()
		j.f = good
		j.mu.Unlock()
		full.Close()
	}
}

// TestJournalWriteFailureIsReported: a write that fails is reported by
// Sync and by the next Append (which records nothing, as before
// buffering); readers are not given unwritten events; once writes work
// again the held-back events reach the file and the readers, with ids
// that have no gaps.
func TestJournalWriteFailureIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	j := openQuiet(t, path)
	restore := failFile(t, j, path)

	if e, err := j.Append(ApprovalRequested, nil); err != nil || e.ID != 1 {
		t.Fatalf("Append(buffered) = %d, %v, want id 1", e.ID, err)
	}
	got, wake, err := j.Since(0, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("Since(0) while writes fail = %v, %v, want no event (it is not written)", got, err)
	}
	if err := j.Sync(); err == nil {
		t.Fatalf("Sync while writes fail = nil, want the write error")
	}
	if _, err := j.Append(ApprovalDenied, nil); err == nil {
		t.Fatalf("Append while writes fail = nil, want the write error")
	}
	if got := j.Last(); got != 1 {
		t.Fatalf("Last after a failed Append = %d, want 1 (nothing recorded)", got)
	}

	restore()
	if err := j.Sync(); err != nil {
		t.Fatalf("Sync after writes work again = %v", err)
	}
	select {
	case <-wake:
	default:
		t.Fatalf("readers waiting on held-back events were not woken")
	}
	if got, _, err := j.Since(0, 10); err != nil || len(got) != 1 || got[0].ID != 1 {
		t.Fatalf("Since(0) after recovery = %v, %v, want event 1", got, err)
	}
	if e, err := j.Append(ApprovalApproved, nil); err != nil || e.ID != 2 {
		t.Fatalf("Append after recovery = %d, %v, want id 2", e.ID, err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if ids := fileIDs(t, path); len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Fatalf("file ids = %v, want [1 2]", ids)
	}
}

// TestJournalCloseWithFailingWriteFails: Close reports events it could not
// write.
func TestJournalCloseWithFailingWriteFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	j := openQuiet(t, path)
	restore := failFile(t, j, path)
	defer restore()
	if _, err := j.Append(ApprovalRequested, nil); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err == nil {
		t.Fatalf("Close with an unwritable buffered event = nil, want the write error")
	}
}
