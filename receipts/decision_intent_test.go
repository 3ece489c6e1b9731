package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

func TestWriteDecisionAndIntent(t *testing.T) {
	tests := []struct {
		name      string
		audit     *AuditRecord
		intent    *Intent
		wantErr   error
		wantLines []string // line types appended, in order
	}{
		{name: "ok/audit-then-intent", audit: &AuditRecord{Principal: "alice", ActionID: "echo", Decision: DecisionAllow},
			intent: sampleIntent(1), wantLines: []string{"audit", "intent"}},
		{name: "ok/intent-only", intent: sampleIntent(2), wantLines: []string{"intent"}},
		{name: "fail/bad-audit-writes-nothing", audit: &AuditRecord{Principal: "alice", Decision: "maybe"},
			intent: sampleIntent(3), wantErr: ErrInvalidRecord},
		{name: "fail/bad-intent-writes-nothing", audit: &AuditRecord{Principal: "alice", Decision: DecisionAllow},
			intent: &Intent{}, wantErr: ErrInvalidRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLedger(t, dir, opts{})
			before := len(readLedgerLines(t, dir))
			err := l.WriteDecisionAndIntent(context.Background(), tt.audit, tt.intent)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("WriteDecisionAndIntent = %v, want %v", err, tt.wantErr)
			}
			lines := readLedgerLines(t, dir)
			var got []string
			for _, ln := range lines[before-1:] {
				var l struct {
					Type string `json:"type"`
				}
				if len(ln) > 0 {
					if err := json.Unmarshal(ln, &l); err != nil {
						t.Fatalf("ledger line %q: %v", ln, err)
					}
					got = append(got, l.Type)
				}
			}
			want := tt.wantLines
			if tt.wantErr != nil {
				want = nil
			}
			if len(got) != len(want) {
				t.Fatalf("new ledger lines = %q, want prefixes %q", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("new line %d prefix = %q, want %q", i, got[i], want[i])
				}
			}
			if tt.wantErr != nil {
				if n, _ := l.Stats(); n != 0 {
					t.Errorf("Stats receipts = %d after a refused write, want 0", n)
				}
				return
			}
			if tt.audit != nil {
				if tt.audit.Seq != 1 || tt.audit.Hash == "" || tt.audit.ID == "" {
					t.Errorf("audit after write = seq %d hash %q id %q, want seq 1, a hash and an id", tt.audit.Seq, tt.audit.Hash, tt.audit.ID)
				}
				raws, err := l.QueryAudit(AuditQuery{})
				// An allow decision is chained, not signed: its receipt
				// carries the signature (mayBeUnsigned).
				if err != nil || len(raws) != 1 || VerifyAuditRecord(raws[0], l.Keys()) != StatusChained {
					t.Errorf("QueryAudit = %d records, %v; want the one chained allow record", len(raws), err)
				}
			}
			// The intent is durable: closing and reopening turns it into
			// an interrupted receipt, and the chains verify.
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := openLedger(t, dir, opts{})
			if r, err := l2.GetReceipt(tt.intent.ReceiptID); err != nil || r.NormalizedResult.Kind != KindInterrupted {
				t.Errorf("GetReceipt(%s) after reopen = %+v, %v; want an interrupted receipt", tt.intent.ReceiptID, r, err)
			}
			if res := l2.Verify(); !res.Intact {
				t.Errorf("Verify = %+v, want intact", res)
			}
		})
	}
}

// TestHeadIntervalCloseWritesNewestHead: with a long HeadInterval the head
// file lags, but Close writes the newest head, and the ledger reopens.
func TestHeadIntervalCloseWritesNewestHead(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Dir: dir, GateID: "g", HeadInterval: time.Hour}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustAppend(t, l, sampleReceipt(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := readHead(OSFS{}, dir)
	if err != nil || h == nil || h.Seq != 5 {
		t.Fatalf("head.json after Close = %+v, %v; want seq 5", h, err)
	}
	l2, err := Open(Config{Dir: dir, GateID: "g"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("reopen = %v", err)
	}
	defer l2.Close()
	if res := l2.Verify(); !res.Intact || res.Receipts != 5 {
		t.Errorf("Verify = %+v, want intact with 5 receipts", res)
	}
	if h := l2.Head(); h.Seq != 5 {
		t.Errorf("Head() = %+v, want seq 5", h)
	}
	if err := (Config{Dir: "x", GateID: "g", HeadInterval: -1}).withDefaults().Validate(); err == nil {
		t.Error("Validate(HeadInterval -1) = nil, want error")
	}
}

// TestHeadSignedWhenRead: commits leave the head unsigned; Head, Verify
// and head.json always carry a valid signature over the newest chain ends.
func TestHeadSignedWhenRead(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	tests := []struct {
		name    string
		n       int
		wantSeq int64
	}{
		{name: "ok/one", n: 1, wantSeq: 1},
		{name: "ok/more", n: 3, wantSeq: 4},
	}
	next := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range tt.n {
				mustAppend(t, l, sampleReceipt(next))
				next++
			}
			h := l.Head()
			if h.Seq != tt.wantSeq || h.Signature == "" {
				t.Fatalf("Head() = seq %d signature %q, want seq %d signed", h.Seq, h.Signature, tt.wantSeq)
			}
			if err := h.verify(l.Keys()); err != nil {
				t.Errorf("Head().verify = %v, want nil", err)
			}
			if res := l.Verify(); !res.Intact || res.Head.Seq != tt.wantSeq {
				t.Errorf("Verify = %+v, want intact at seq %d", res, tt.wantSeq)
			}
		})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := readHead(OSFS{}, dir)
	if err != nil || h == nil || h.verify(l.Keys()) != nil || h.Seq != 4 {
		t.Errorf("head.json after Close = %+v, %v; want a valid signed head at seq 4", h, err)
	}
}
