package receipts

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// FuzzOpenLedger: whatever bytes the ledger file holds (a torn, edited
// or foreign file), Open either opens it or returns an error; it never
// panics. The seed is a real ledger (receipts, a decision record, an
// intent left dangling, an abort) under its own signing key; head.json is
// left out so that Open scans every line.
func FuzzOpenLedger(f *testing.F) {
	tmpl := f.TempDir()
	l, err := Open(Config{Dir: tmpl, GateID: "gate-fuzz"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if _, err := l.Append(ctx, sampleReceipt(i)); err != nil {
			f.Fatal(err)
		}
	}
	if err := l.AppendAudit(ctx, &AuditRecord{Principal: "alice", ActionID: "echo", Decision: DecisionDeny, RequestHash: sampleReceipt(0).RequestHash}); err != nil {
		f.Fatal(err)
	}
	if err := l.WriteIntent(ctx, sampleIntent(7)); err != nil {
		f.Fatal(err)
	}
	if err := l.WriteIntent(ctx, sampleIntent(8)); err != nil {
		f.Fatal(err)
	}
	if err := l.WriteAbort(ctx, sampleIntent(8).GrantID, "grant_refused"); err != nil {
		f.Fatal(err)
	}
	if err := l.Close(); err != nil {
		f.Fatal(err)
	}
	ledger, err := os.ReadFile(filepath.Join(tmpl, ledgerFileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ledger)
	lines := bytes.SplitAfter(ledger, []byte("\n"))
	f.Add(bytes.Join(lines[1:], nil))                                                 // the first record gone
	f.Add(append(bytes.Join(lines[:len(lines)-2], nil), lines[len(lines)-2][:40]...)) // a torn last record
	f.Add([]byte("{}\n[]\nnull\n\"x\"\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(tmpl)); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(dir, headFileName))
		if err := os.WriteFile(filepath.Join(dir, ledgerFileName), content, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(Config{Dir: dir, GateID: "gate-fuzz"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
		if err != nil {
			return
		}
		_ = l.Verify()
		_ = l.Close()
	})
}
