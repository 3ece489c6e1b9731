package events

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// benchEvent has the shape of the gate's receipt.created data.
type benchEvent struct {
	ReceiptID string `json:"receipt_id"`
	ActionID  string `json:"action_id"`
	Principal string `json:"principal"`
	Kind      string `json:"kind"`
	Head      struct {
		Seq  int64  `json:"seq"`
		Hash string `json:"hash"`
	} `json:"ledger_head"`
}

// BenchmarkJournalAppend appends to a journal backed by a file, as the
// gate does once per execute (receipt.created).
func BenchmarkJournalAppend(b *testing.B) {
	j, err := Open(Config{Path: filepath.Join(b.TempDir(), "events.log")}, clock.NewFake(time.Now()), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	ev := benchEvent{ReceiptID: "0192f1d2-7c3a-7b1e-9a4f-3c2d1e0f9a8b", ActionID: "echo", Principal: "alice", Kind: "success"}
	ev.Head.Seq, ev.Head.Hash = 12345, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.Append(ReceiptCreated, ev); err != nil {
			b.Fatal(err)
		}
	}
}
