package receipts

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.UTC)

type opts struct {
	fs     FS
	syncer Syncer
	cap    int
}

func openLedger(tb testing.TB, dir string, o opts) *Ledger {
	tb.Helper()
	l, err := Open(Config{Dir: dir, GateID: "gate-test", OutputCap: o.cap},
		Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop(), FS: o.fs, Syncer: o.syncer})
	if err != nil {
		tb.Fatalf("Open(%s) = %v", dir, err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

func sampleReceipt(i int) *Receipt {
	rh := "sha256:" + strings.Repeat("b", 64)
	return &Receipt{
		ReceiptID:           fmt.Sprintf("rcpt-%04d", i),
		TraceID:             fmt.Sprintf("trace-%d", i),
		GrantID:             fmt.Sprintf("grant-%04d", i),
		ActionID:            "echo",
		ActionVersion:       "1.0.0",
		ActionDigest:        "sha256:" + strings.Repeat("a", 64),
		Principal:           "alice",
		SessionID:           "sess-1",
		Peer:                &Peer{UID: 1000, PID: 42},
		RequestHash:         "sha256:" + strings.Repeat("c", 64),
		ResponseHash:        &rh,
		Output:              json.RawMessage(fmt.Sprintf(`{"n":%d,"text":"héllo <&>"}`, i)),
		NormalizedResult:    NormalizedResult{Kind: KindSuccess, Summary: "ok"},
		VerificationOutcome: VerificationOutcome{Status: VerificationVerified},
		Egress:              Egress{Hosts: []string{"api.example.com"}},
		PolicyVersion:       "pv1",
		StartedAt:           FormatTime(t0),
		FinishedAt:          FormatTime(t0.Add(time.Second)),
	}
}

func sampleIntent(i int) *Intent {
	r := sampleReceipt(i)
	return &Intent{
		GrantID: r.GrantID, TraceID: r.TraceID, ReceiptID: r.ReceiptID, ActionID: r.ActionID,
		ActionVersion: r.ActionVersion, ActionDigest: r.ActionDigest, Principal: r.Principal,
		SessionID: r.SessionID, Peer: r.Peer, RequestHash: r.RequestHash, PolicyVersion: r.PolicyVersion,
		Egress: r.Egress, StartedAt: r.StartedAt,
	}
}

func mustAppend(tb testing.TB, l *Ledger, r *Receipt) *Receipt {
	tb.Helper()
	got, err := l.Append(context.Background(), r)
	if err != nil {
		tb.Fatalf("Append(%s) = %v", r.ReceiptID, err)
	}
	return got
}

// fill writes n receipts and n audit records.
func fill(tb testing.TB, l *Ledger, from, n int) {
	tb.Helper()
	for i := from; i < from+n; i++ {
		mustAppend(tb, l, sampleReceipt(i))
		if err := l.AppendAudit(context.Background(), &AuditRecord{Principal: "alice", ActionID: "echo", Decision: DecisionAllow}); err != nil {
			tb.Fatalf("AppendAudit = %v", err)
		}
	}
}

func ledgerPath(dir string) string { return filepath.Join(dir, ledgerFileName) }

func readLedgerLines(tb testing.TB, dir string) [][]byte {
	tb.Helper()
	data, err := os.ReadFile(ledgerPath(dir))
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))
}

func writeLedgerLines(tb testing.TB, dir string, lines [][]byte) {
	tb.Helper()
	if err := os.WriteFile(ledgerPath(dir), bytes.Join(lines, nil), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// lineOf returns the index of the line holding the receipt with seq.
func lineOf(tb testing.TB, lines [][]byte, prefix string, seq int) int {
	tb.Helper()
	for i, ln := range lines {
		if bytes.HasPrefix(ln, []byte(prefix)) && bytes.Contains(ln, []byte(fmt.Sprintf(`"seq":%d,`, seq))) {
			return i
		}
	}
	tb.Fatalf("no line with seq %d", seq)
	return -1
}

func TestFormatTime(t *testing.T) {
	tests := []struct {
		name string
		in   time.Time
		want string
	}{
		{"truncates to ms", time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC), "2026-01-02T03:04:05.999Z"},
		{"pads ms", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000Z"},
		{"converts to UTC", time.Date(2026, 1, 2, 3, 4, 5, 7_000_000, time.FixedZone("x", 3600)), "2026-01-02T02:04:05.007Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatTime(tt.in); got != tt.want {
				t.Errorf("FormatTime(%v) = %q, want %q", tt.in, got, tt.want)
			}
			if _, err := ParseTime(tt.want); err != nil {
				t.Errorf("ParseTime(%q) = %v, want nil", tt.want, err)
			}
		})
	}
	for _, bad := range []string{"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000+00:00", "2026-01-02T03:04:05.0000Z", "2026-01-02 03:04:05.000Z"} {
		t.Run("rejects "+bad, func(t *testing.T) {
			if _, err := ParseTime(bad); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("ParseTime(%q) = %v, want ErrInvalidRecord", bad, err)
			}
		})
	}
}

func TestChainVerifies(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	var stored []*Receipt
	for i := range 20 {
		stored = append(stored, mustAppend(t, l, sampleReceipt(i)))
		if err := l.AppendAudit(context.Background(), &AuditRecord{Principal: "alice", Decision: DecisionDeny, DenyReasons: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range stored {
		if r.Seq != int64(i+1) {
			t.Errorf("receipt %d Seq = %d, want %d", i, r.Seq, i+1)
		}
		if i == 0 && r.PrevHash != nil {
			t.Errorf("first PrevHash = %v, want nil", *r.PrevHash)
		}
		if i > 0 && (r.PrevHash == nil || *r.PrevHash != stored[i-1].Hash) {
			t.Errorf("receipt %d PrevHash does not link to %s", i, stored[i-1].Hash)
		}
		raw, err := l.Get(r.ReceiptID)
		if err != nil {
			t.Fatal(err)
		}
		if want := storedForm(t, r); !bytes.Equal(raw, want) {
			t.Errorf("Get(%s) = %s, want %s", r.ReceiptID, raw, want)
		}
		if got := l.SignatureStatus(raw); got != StatusValid {
			t.Errorf("SignatureStatus(%s) = %s, want valid", r.ReceiptID, got)
		}
		if h, _ := recordHash(raw); h != r.Hash {
			t.Errorf("recordHash(%s) = %s, want %s", r.ReceiptID, h, r.Hash)
		}
	}
	res := l.Verify()
	if !res.Intact || res.Receipts != 20 || res.AuditRecords != 20 || res.Head.Seq != 20 || res.Head.AuditSeq != 20 {
		t.Fatalf("Verify() = %+v (break %+v), want intact 20/20", res, res.FirstBreak)
	}
	if res.Head.Hash != stored[19].Hash {
		t.Errorf("Head.Hash = %s, want %s", res.Head.Hash, stored[19].Hash)
	}
	if r, a := l.Stats(); r != 20 || a != 20 {
		t.Errorf("Stats() = %d, %d, want 20, 20", r, a)
	}
	// JWKS kid is the receipts' key_id.
	keys, err := ParseKeySet(l.KeySet())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keys[stored[0].KeyID]; !ok || len(keys) != 1 {
		t.Errorf("KeySet() kids = %v, want exactly %s", keys, stored[0].KeyID)
	}
	l.Close()
	off, err := VerifyDir(dir)
	if err != nil || !off.Intact || off.Receipts != 20 {
		t.Fatalf("VerifyDir = %+v, %v, want intact", off, err)
	}
	for _, name := range []string{ledgerFileName, headFileName, filepath.Join(keysDirName, signingKeyFile), filepath.Join(keysDirName, publicKeysFile)} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("mode of %s = %v, %v, want 0600", name, st.Mode().Perm(), err)
		}
	}
}

func TestTamperDetected(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(t *testing.T, lines [][]byte) [][]byte
		wantChain string
		wantSeq   int64
	}{
		{"one byte of receipt 5", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixReceipt, 5)
			lines[i] = bytes.Replace(lines[i], []byte(`"principal":"alice"`), []byte(`"principal":"alicf"`), 1)
			return lines
		}, ChainReceipts, 5},
		{"one byte of audit 3", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 3)
			lines[i] = bytes.Replace(lines[i], []byte(`"decision":"allow"`), []byte(`"decision":"allox"`), 1)
			return lines
		}, ChainAudit, 3},
		{"receipt 4 removed", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixReceipt, 4)
			return append(lines[:i], lines[i+1:]...)
		}, ChainReceipts, 5},
		{"last receipt removed", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixReceipt, 8)
			return append(lines[:i], lines[i+1:]...)
		}, ChainHead, 8},
		{"last audit record removed", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 8)
			return append(lines[:i], lines[i+1:]...)
		}, ChainHead, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLedger(t, dir, opts{})
			fill(t, l, 0, 8)
			l.Close()
			writeLedgerLines(t, dir, tt.mutate(t, readLedgerLines(t, dir)))
			res, err := VerifyDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if res.Intact || res.FirstBreak == nil || res.FirstBreak.Chain != tt.wantChain || res.FirstBreak.Seq != tt.wantSeq {
				t.Fatalf("VerifyDir() = intact %v break %+v, want break %s seq %d", res.Intact, res.FirstBreak, tt.wantChain, tt.wantSeq)
			}
		})
	}
	t.Run("open refuses a ledger cut before its head", func(t *testing.T) {
		dir := t.TempDir()
		l := openLedger(t, dir, opts{})
		fill(t, l, 0, 3)
		l.Close()
		lines := readLedgerLines(t, dir)
		i := lineOf(t, lines, prefixReceipt, 3)
		writeLedgerLines(t, dir, append(lines[:i], lines[i+1:]...))
		_, err := Open(Config{Dir: dir, GateID: "g"}, Deps{Clock: clock.NewFake(t0)})
		if !errors.Is(err, ErrHeadMismatch) {
			t.Fatalf("Open(cut ledger) = %v, want ErrHeadMismatch", err)
		}
	})
	t.Run("live Verify sees a changed middle receipt", func(t *testing.T) {
		dir := t.TempDir()
		l := openLedger(t, dir, opts{})
		fill(t, l, 0, 5)
		lines := readLedgerLines(t, dir)
		i := lineOf(t, lines, prefixReceipt, 2)
		lines[i] = bytes.Replace(lines[i], []byte(`"echo"`), []byte(`"ecxo"`), 1)
		writeLedgerLines(t, dir, lines)
		if res := l.Verify(); res.Intact || res.FirstBreak.Seq != 2 || res.FirstBreak.Chain != ChainReceipts {
			t.Fatalf("Verify() = %+v, want break at receipt 2", res.FirstBreak)
		}
	})
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name string
		tail func(lines [][]byte) []byte
	}{
		{"half a line", func(lines [][]byte) []byte {
			last := lines[len(lines)-2]
			return last[:len(last)/2]
		}},
		{"zeros", func([][]byte) []byte { return make([]byte, 300) }},
		{"bad json line", func([][]byte) []byte { return []byte(prefixReceipt + `{"seq":4,` + "}\n") }},
		{"next seq with a wrong hash", func(lines [][]byte) []byte {
			last := lines[lineOf(t, lines, prefixReceipt, 3)]
			var m map[string]any
			json.Unmarshal(last[len(prefixReceipt):len(last)-2], &m)
			m["prev_hash"], m["seq"], m["receipt_id"] = m["hash"], 4, "rcpt-x"
			b, _ := json.Marshal(m)
			return append(append([]byte(prefixReceipt), b...), "}\n"...)
		}},
		{"torn intent then half receipt", func(lines [][]byte) []byte {
			return []byte(prefixIntent + `{"grant_id":"g` + "\n" + prefixReceipt + `{"x"`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLedger(t, dir, opts{})
			fill(t, l, 0, 3)
			l.Close()
			before, _ := os.ReadFile(ledgerPath(dir))
			tail := tt.tail(readLedgerLines(t, dir))
			writeLedgerLines(t, dir, [][]byte{before, tail})

			l2 := openLedger(t, dir, opts{})
			after, _ := os.ReadFile(ledgerPath(dir))
			if !bytes.Equal(after, before) {
				t.Errorf("ledger after Open = %d bytes, want the %d good bytes", len(after), len(before))
			}
			torn, _ := filepath.Glob(filepath.Join(dir, "torn-*"))
			if len(torn) != 1 {
				t.Fatalf("torn files = %v, want 1", torn)
			}
			if got, _ := os.ReadFile(torn[0]); !bytes.Equal(got, tail) {
				t.Errorf("torn file = %q, want %q", got, tail)
			}
			if res := l2.Verify(); !res.Intact {
				t.Errorf("Verify() after torn tail = %+v", res.FirstBreak)
			}
			if r := mustAppend(t, l2, sampleReceipt(10)); r.Seq != 4 {
				t.Errorf("Append after torn tail Seq = %d, want 4", r.Seq)
			}
		})
	}
}

func TestInterruptedIntents(t *testing.T) {
	tests := []struct {
		name            string
		after           func(t *testing.T, l *Ledger)
		wantInterrupted bool
	}{
		{"intent only", func(*testing.T, *Ledger) {}, true},
		{"intent then abort", func(t *testing.T, l *Ledger) {
			if err := l.WriteAbort(context.Background(), "grant-0007", "grant refused"); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"intent then receipt", func(t *testing.T, l *Ledger) { mustAppend(t, l, sampleReceipt(7)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLedger(t, dir, opts{})
			fill(t, l, 0, 2)
			in := sampleIntent(7)
			in.Approval = &Approval{Kind: ApprovalOperator, ApprovalID: "appr-1", ApprovedBy: "op", ApprovedAt: FormatTime(t0)}
			if err := l.WriteIntent(context.Background(), in); err != nil {
				t.Fatal(err)
			}
			tt.after(t, l)
			l.Close()

			l2 := openLedger(t, dir, opts{})
			r, err := l2.GetReceipt(in.ReceiptID)
			if !tt.wantInterrupted {
				if err == nil && r.NormalizedResult.Kind == KindInterrupted {
					t.Fatalf("GetReceipt = interrupted receipt, want none")
				}
				if n, _ := l2.Stats(); tt.name == "intent then abort" && n != 2 {
					t.Errorf("Stats receipts = %d, want 2", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetReceipt(%s) = %v, want interrupted receipt", in.ReceiptID, err)
			}
			want := NormalizedResult{Kind: KindInterrupted, Summary: InterruptedSummary}
			if r.NormalizedResult != want || r.ResponseHash != nil || (r.Output != nil && string(r.Output) != "null") || r.Seq != 3 || r.GrantID != in.GrantID {
				t.Errorf("interrupted receipt = %+v", r)
			}
			if raw, _ := l2.Get(in.ReceiptID); !bytes.Contains(raw, []byte(`"response_hash":null`)) || !bytes.Contains(raw, []byte(`"output":null`)) {
				t.Errorf("stored interrupted receipt = %s, want null response_hash and output", raw)
			}
			if a, err := l2.FindByApproval("appr-1"); err != nil || a.ReceiptID != in.ReceiptID {
				t.Errorf("FindByApproval(appr-1) = %v, %v", a, err)
			}
			l2.Close()
			// A second reopen must not record it again.
			l3 := openLedger(t, dir, opts{})
			if n, _ := l3.Stats(); n != 3 {
				t.Errorf("receipts after second reopen = %d, want 3", n)
			}
			if res := l3.Verify(); !res.Intact {
				t.Errorf("Verify = %+v", res.FirstBreak)
			}
		})
	}
}

func TestReopenContinuesSeq(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	fill(t, l, 0, 3)
	last := mustAppend(t, l, sampleReceipt(3))
	l.Close()
	l2 := openLedger(t, dir, opts{})
	r := mustAppend(t, l2, sampleReceipt(4))
	if r.Seq != 5 || r.PrevHash == nil || *r.PrevHash != last.Hash {
		t.Fatalf("Append after reopen = seq %d prev %v, want seq 5 prev %s", r.Seq, r.PrevHash, last.Hash)
	}
	if _, err := l2.Append(context.Background(), sampleReceipt(4)); !errors.Is(err, ErrDuplicate) {
		t.Errorf("Append(duplicate id) = %v, want ErrDuplicate", err)
	}
	if got, err := l2.GetReceipt(last.ReceiptID); err != nil || got.Hash != last.Hash {
		t.Errorf("GetReceipt(old) = %v, %v", got, err)
	}
	if _, err := l2.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}
	if res := l2.Verify(); !res.Intact || res.Receipts != 5 {
		t.Errorf("Verify = %+v", res)
	}
}

// TestOpenRefusesLedgerInUse: a second Open of a ledger directory that is
// open (a second gate on the same state dir, `keys rotate --state-dir` next
// to a running gate) is refused and writes nothing. Without the lock it
// turned the first writer's in-flight intent into an interrupted receipt
// and both then appended a receipt with the same seq and receipt_id.
func TestOpenRefusesLedgerInUse(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	fill(t, l, 0, 2)
	in := sampleIntent(7)
	if err := l.WriteIntent(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(ledgerPath(dir))
	l2, err := Open(Config{Dir: dir, GateID: "other"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
	if err == nil {
		l2.Close()
	}
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open(%s) = %v, want ErrInUse", dir, err)
	}
	if after, _ := os.ReadFile(ledgerPath(dir)); !bytes.Equal(after, before) {
		t.Errorf("refused Open changed the ledger: %d bytes, want %d", len(after), len(before))
	}
	mustAppend(t, l, sampleReceipt(7))
	if res := l.Verify(); !res.Intact || res.Receipts != 3 {
		t.Errorf("Verify() = %+v (break %+v), want intact with 3 receipts", res, res.FirstBreak)
	}
	l.Close()
	openLedger(t, dir, opts{}) // free again once closed
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	const n = 64
	seqs := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := l.Append(context.Background(), sampleReceipt(i))
			if err != nil {
				t.Error(err)
				return
			}
			seqs[i] = r.Seq
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, s := range seqs {
		if s < 1 || s > n || seen[s] {
			t.Fatalf("seqs = %v, want 1..%d unique", seqs, n)
		}
		seen[s] = true
	}
	if res := l.Verify(); !res.Intact || res.Receipts != n || res.Head.Seq != n {
		t.Fatalf("Verify() = %+v", res)
	}
}

// faultFS fails the next N writes or fsyncs of the ledger file.
type faultFS struct {
	OSFS
	failWrites atomic.Int32
	failSyncs  atomic.Int32
}

var errInjected = errors.New("injected fault")

func take(n *atomic.Int32) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != ledgerFileName {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

type faultFile struct {
	File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if take(&f.fs.failWrites) {
		n, _ := f.File.Write(p[:len(p)/2]) // a partial write, then the error
		return n, errInjected
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if take(&f.fs.failSyncs) {
		return errInjected
	}
	return f.File.Sync()
}

type failSyncer struct{ fail atomic.Bool }

func (s *failSyncer) Sync() error {
	if s.fail.Load() {
		return errInjected
	}
	return nil
}

func TestFaultInjection(t *testing.T) {
	tests := []struct {
		name       string
		arm        func(*faultFS, *failSyncer)
		wantSticky bool
	}{
		{"write fails", func(f *faultFS, _ *failSyncer) { f.failWrites.Store(1) }, false},
		{"fsync fails once", func(f *faultFS, _ *failSyncer) { f.failSyncs.Store(1) }, false},
		{"store sync fails", func(_ *faultFS, s *failSyncer) { s.fail.Store(true) }, false},
		{"fsync and rollback fsync fail", func(f *faultFS, _ *failSyncer) { f.failSyncs.Store(2) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs, fsy := &faultFS{}, &failSyncer{}
			l := openLedger(t, dir, opts{fs: ffs, syncer: fsy})
			first := mustAppend(t, l, sampleReceipt(0))
			size := fileSize(t, dir)

			tt.arm(ffs, fsy)
			if err := l.WriteIntent(context.Background(), sampleIntent(1)); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("WriteIntent under fault = %v, want ErrUnavailable", err)
			}
			fsy.fail.Store(false)
			if got := fileSize(t, dir); got != size {
				t.Errorf("ledger size after failed commit = %d, want %d (nothing unacknowledged kept)", got, size)
			}
			if _, err := l.Get(sampleReceipt(1).ReceiptID); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(unacknowledged) = %v, want ErrNotFound", err)
			}
			if h := l.Head(); h.Seq != 1 || h.Hash != first.Hash {
				t.Errorf("Head() = %+v, want seq 1", h)
			}
			r, err := l.Append(context.Background(), sampleReceipt(2))
			if tt.wantSticky {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Append after failed rollback = %v, want ErrUnavailable", err)
				}
				return
			}
			if err != nil || r.Seq != 2 || *r.PrevHash != first.Hash {
				t.Fatalf("Append after fault = %+v, %v, want seq 2 linked to seq 1", r, err)
			}
			l.Close()
			l2 := openLedger(t, dir, opts{})
			if n, _ := l2.Stats(); n != 2 {
				t.Errorf("receipts after reopen = %d, want 2 (no interrupted receipt from the failed intent)", n)
			}
			if res := l2.Verify(); !res.Intact {
				t.Errorf("Verify = %+v", res.FirstBreak)
			}
		})
	}
	t.Run("append fails on write", func(t *testing.T) {
		ffs := &faultFS{}
		l := openLedger(t, t.TempDir(), opts{fs: ffs})
		ffs.failWrites.Store(1)
		if _, err := l.Append(context.Background(), sampleReceipt(0)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Append under write fault = %v, want ErrUnavailable", err)
		}
		if n, _ := l.Stats(); n != 0 {
			t.Errorf("Stats = %d receipts, want 0", n)
		}
	})
}

func fileSize(tb testing.TB, dir string) int64 {
	tb.Helper()
	st, err := os.Stat(ledgerPath(dir))
	if err != nil {
		tb.Fatal(err)
	}
	return st.Size()
}

func TestOutputCap(t *testing.T) {
	tests := []struct {
		name          string
		output        string
		wantTruncated bool
	}{
		{"under cap", `"` + strings.Repeat("x", 60) + `"`, false},
		{"exactly cap", `"` + strings.Repeat("x", 62) + `"`, false},
		{"over cap", `"` + strings.Repeat("x", 63) + `"`, true},
		{"null output", `null`, false},
		// 21 bytes as sent, 89 as stored: the cap bounds what is stored.
		{"over cap once canonical", `[1e20,1e20,1e20,1e20]`, true},
	}
	l := openLedger(t, t.TempDir(), opts{cap: 64})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := sampleReceipt(i)
			in.Output = json.RawMessage(tt.output)
			r := mustAppend(t, l, in)
			raw, _ := l.Get(r.ReceiptID)
			wantOut := tt.output
			if tt.wantTruncated {
				wantOut = "null"
			}
			if r.OutputTruncated != tt.wantTruncated || !bytes.Contains(raw, []byte(`"output":`+wantOut+`,"output_truncated":`+fmt.Sprint(tt.wantTruncated))) {
				t.Errorf("Append(output %d bytes) stored %s, want output %s truncated %v", len(tt.output), raw, wantOut, tt.wantTruncated)
			}
			if *r.ResponseHash != *in.ResponseHash {
				t.Errorf("response_hash = %s, want the gate's %s", *r.ResponseHash, *in.ResponseHash)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Receipt)
	}{
		{"no receipt_id", func(r *Receipt) { r.ReceiptID = "" }},
		{"no grant_id", func(r *Receipt) { r.GrantID = "" }},
		{"unknown kind", func(r *Receipt) { r.NormalizedResult.Kind = "great" }},
		{"unknown status", func(r *Receipt) { r.VerificationOutcome.Status = "" }},
		{"time with offset", func(r *Receipt) { r.StartedAt = "2026-01-02T03:04:05.000+01:00" }},
		{"time without ms", func(r *Receipt) { r.FinishedAt = "2026-01-02T03:04:05Z" }},
		{"invalid output", func(r *Receipt) { r.Output = json.RawMessage(`{"a":`) }},
		{"non I-JSON output", func(r *Receipt) { r.Output = json.RawMessage(`{"a":1,"a":2}`) }},
		{"bad approval kind", func(r *Receipt) { r.Approval = &Approval{Kind: "x", ApprovalID: "a"} }},
	}
	l := openLedger(t, t.TempDir(), opts{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleReceipt(i)
			tt.mutate(r)
			if _, err := l.Append(context.Background(), r); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("Append(%s) = %v, want ErrInvalidRecord", tt.name, err)
			}
		})
	}
	if err := l.AppendAudit(context.Background(), &AuditRecord{Decision: "maybe"}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("AppendAudit(decision maybe) = %v, want ErrInvalidRecord", err)
	}
	if res := l.Verify(); !res.Intact || res.Receipts != 0 {
		t.Errorf("Verify after refused records = %+v", res)
	}
}

// TestQueryAudit runs the filters against a fresh and a reopened (rebuilt)
// index, with intern tables large enough for every value and with tables
// so small that some values are not interned and must be read from disk.
func TestQueryAudit(t *testing.T) {
	recs := []AuditRecord{
		{Principal: "alice", ActionID: "echo", Decision: DecisionAllow},
		{Principal: "bob", ActionID: "echo", Decision: DecisionDeny, DenyReasons: []string{"acl"}},
		{Principal: "alice", ActionID: "http", Decision: DecisionPending, ApprovalID: "a1"},
		{Principal: "alice", ActionID: "http", Decision: DecisionApproved, ApprovalID: "a1", DecidedBy: "op"},
	}
	tests := []struct {
		name string
		q    AuditQuery
		want []int64 // seqs, newest first
	}{
		{"all", AuditQuery{}, []int64{4, 3, 2, 1}},
		{"principal", AuditQuery{Principal: "alice"}, []int64{4, 3, 1}},
		{"principal seen second", AuditQuery{Principal: "bob"}, []int64{2}},
		{"principal unknown", AuditQuery{Principal: "carol"}, nil},
		{"action", AuditQuery{ActionID: "echo"}, []int64{2, 1}},
		{"action seen second", AuditQuery{ActionID: "http"}, []int64{4, 3}},
		{"decision", AuditQuery{Decision: DecisionDeny}, []int64{2}},
		{"decision seen third", AuditQuery{Decision: DecisionPending}, []int64{3}},
		{"principal and action", AuditQuery{Principal: "alice", ActionID: "http"}, []int64{4, 3}},
		{"principal and decision", AuditQuery{Principal: "bob", Decision: DecisionAllow}, nil},
		{"after", AuditQuery{After: t0.Add(time.Minute)}, []int64{4, 3}},
		{"before", AuditQuery{Before: t0.Add(time.Minute)}, []int64{1}},
		{"after and action", AuditQuery{After: t0.Add(time.Minute), ActionID: "http"}, []int64{4, 3}},
		{"limit", AuditQuery{Limit: 2}, []int64{4, 3}},
		{"limit with filter", AuditQuery{Principal: "alice", Limit: 2}, []int64{4, 3}},
	}
	for _, internCap := range []int{0, 1, 2} {
		for _, reopen := range []bool{false, true} {
			t.Run(fmt.Sprintf("cap=%d/reopen=%v", internCap, reopen), func(t *testing.T) {
				fc := clock.NewFake(t0)
				dir := t.TempDir()
				cfg := Config{Dir: dir, GateID: "g", AuditInternCap: internCap}
				l, err := Open(cfg, Deps{Clock: fc})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { l.Close() }()
				recs := append([]AuditRecord(nil), recs...)
				for i := range recs {
					if err := l.AppendAudit(context.Background(), &recs[i]); err != nil {
						t.Fatal(err)
					}
					fc.Advance(time.Minute)
				}
				if reopen {
					l.Close()
					if l, err = Open(cfg, Deps{Clock: fc}); err != nil {
						t.Fatal(err)
					}
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						raws, err := l.QueryAudit(tt.q)
						if err != nil {
							t.Fatal(err)
						}
						var got []int64
						for _, raw := range raws {
							var a AuditRecord
							json.Unmarshal(raw, &a)
							got = append(got, a.Seq)
							want := StatusValid
							if a.Decision == DecisionAllow {
								want = StatusChained
							}
							if got := VerifyAuditRecord(raw, l.Keys()); got != want {
								t.Errorf("audit record %d (%s): VerifyAuditRecord = %s, want %s", a.Seq, a.Decision, got, want)
							}
						}
						if fmt.Sprint(got) != fmt.Sprint(tt.want) {
							t.Errorf("QueryAudit(%+v) seqs = %v, want %v", tt.q, got, tt.want)
						}
					})
				}
				if recs[0].ID == "" || recs[0].ID[14] != '7' || recs[0].Time != FormatTime(t0) {
					t.Errorf("AppendAudit id/time = %q %q, want a UUIDv7 and %s", recs[0].ID, recs[0].Time, FormatTime(t0))
				}
			})
		}
	}
}

func TestVerifyReceiptStatus(t *testing.T) {
	l := openLedger(t, t.TempDir(), opts{})
	r := mustAppend(t, l, sampleReceipt(1))
	raw, _ := l.Get(r.ReceiptID)
	other := openLedger(t, t.TempDir(), opts{})
	tests := []struct {
		name string
		raw  []byte
		keys func() map[string]ed25519.PublicKey
		want string
	}{
		{"stored", raw, l.Keys, StatusValid},
		{"served with signature_status", WithSignatureStatus(raw, StatusValid), l.Keys, StatusValid},
		{"content changed", bytes.Replace(raw, []byte("alice"), []byte("mallory"), 1), l.Keys, StatusInvalid},
		{"hash and content changed", mutateField(t, raw, "hash", "sha256:"+strings.Repeat("0", 64)), l.Keys, StatusInvalid},
		{"signature changed", mutateField(t, raw, "signature", strings.Repeat("A", 86)), l.Keys, StatusInvalid},
		{"other gate's keys", raw, other.Keys, StatusUnknownKeyID},
		{"duplicate key", append([]byte(`{"principal":"x",`), raw[1:]...), l.Keys, StatusInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifyReceipt(tt.raw, tt.keys()); got != tt.want {
				t.Errorf("VerifyReceipt(%s) = %s, want %s", tt.name, got, tt.want)
			}
		})
	}
}

// storedForm is how the ledger stores the receipt Append returned: the JCS
// form that was hashed, then hash, signature and key_id. It fails the test
// if r's hash is not the hash of those bytes.
func storedForm(t testing.TB, r *Receipt) []byte {
	t.Helper()
	c := *r
	c.Hash, c.Signature, c.KeyID = "", "", ""
	hashed, err := appendReceipt(nil, &c)
	if err != nil {
		t.Fatal(err)
	}
	if h := hashBytes(hashed); h != r.Hash {
		t.Fatalf("receipt %s: hash %s, want the hash of its JCS form %s", r.ReceiptID, r.Hash, h)
	}
	return fmt.Appendf(hashed[:len(hashed)-1], `,"hash":%q,"signature":%q,"key_id":%q}`, r.Hash, r.Signature, r.KeyID)
}

func mutateField(t *testing.T, raw []byte, field, value string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m[field] = value
	b, _ := json.Marshal(m)
	return b
}

func TestRotate(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	r1 := mustAppend(t, l, sampleReceipt(1))
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	r2 := mustAppend(t, l, sampleReceipt(2))
	if r1.KeyID == r2.KeyID || r2.KeyID != l.KeyID() {
		t.Fatalf("key ids = %s, %s, want different and current", r1.KeyID, r2.KeyID)
	}
	l.Close()
	l2 := openLedger(t, dir, opts{})
	if l2.KeyID() != r2.KeyID {
		t.Errorf("KeyID after reopen = %s, want %s", l2.KeyID(), r2.KeyID)
	}
	keys, _ := ParseKeySet(l2.KeySet())
	if len(keys) != 2 {
		t.Errorf("KeySet has %d keys, want 2", len(keys))
	}
	if res := l2.Verify(); !res.Intact {
		t.Errorf("Verify after rotation = %+v", res.FirstBreak)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{GateID: "g"}},
		{"no gate id", Config{Dir: "x"}},
		{"negative cap", Config{Dir: "x", GateID: "g", OutputCap: -1}},
		{"negative window", Config{Dir: "x", GateID: "g", GroupCommitWindow: -1}},
		{"busy window below -1", Config{Dir: "x", GateID: "g", BusyCommitWindow: -2}},
		{"negative busy ops", Config{Dir: "x", GateID: "g", BusyCommitOps: -1}},
		{"negative intern cap", Config{Dir: "x", GateID: "g", AuditInternCap: -1}},
		{"intern cap over 65535", Config{Dir: "x", GateID: "g", AuditInternCap: 65536}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.withDefaults().Validate(); err == nil {
				t.Errorf("Validate(%+v) = nil, want error", tt.cfg)
			}
		})
	}
	if _, err := Open(Config{Dir: t.TempDir(), GateID: "g"}, Deps{}); err == nil {
		t.Error("Open without clock = nil, want error")
	}
}

func TestClosed(t *testing.T) {
	l := openLedger(t, t.TempDir(), opts{})
	l.Close()
	if _, err := l.Append(context.Background(), sampleReceipt(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := l.Get("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestGroupCommitWindow(t *testing.T) {
	l, err := Open(Config{Dir: t.TempDir(), GateID: "g", GroupCommitWindow: time.Millisecond}, Deps{Clock: clock.NewFake(t0)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() { mustAppend(t, l, sampleReceipt(i)) })
	}
	wg.Wait()
	if res := l.Verify(); !res.Intact || res.Receipts != 16 {
		t.Errorf("Verify = %+v", res)
	}
}

type countSyncer struct{ n atomic.Int64 }

func (s *countSyncer) Sync() error { s.n.Add(1); return nil }

// withProof is sampleIntent(i) naming a proof, with storeState as given.
func withProof(i int, storeState bool) *Intent {
	in := sampleIntent(i)
	in.Proof = &ProofRef{JKT: "jkt-1", JTI: fmt.Sprintf("jti-%d", i), ExpiresAt: FormatTime(t0.Add(70 * time.Second))}
	in.StoreState = storeState
	return in
}

// TestStoreSyncPerCommit: every commit that lets something run on state
// store writes, or records a decision, syncs the store; an intent that
// names its proof and nothing else does not (its replay entry is restored
// from the intent after a power loss: RecentProofs); a commit of receipts
// only does not.
func TestStoreSyncPerCommit(t *testing.T) {
	allow := func() *AuditRecord {
		return &AuditRecord{Principal: "alice", ActionID: "echo", Decision: DecisionAllow}
	}
	tests := []struct {
		name      string
		write     func(l *Ledger) error
		wantSyncs int64
	}{
		{"intent without proof", func(l *Ledger) error { return l.WriteIntent(context.Background(), sampleIntent(1)) }, 1},
		{"decision and intent without proof", func(l *Ledger) error {
			return l.WriteDecisionAndIntent(context.Background(), allow(), sampleIntent(2))
		}, 1},
		{"intent with proof", func(l *Ledger) error { return l.WriteIntent(context.Background(), withProof(5, false)) }, 0},
		{"decision and intent with proof", func(l *Ledger) error {
			return l.WriteDecisionAndIntent(context.Background(), allow(), withProof(6, false))
		}, 0},
		{"intent with proof and store state", func(l *Ledger) error {
			return l.WriteDecisionAndIntent(context.Background(), allow(), withProof(7, true))
		}, 1},
		{"decision", func(l *Ledger) error {
			return l.AppendAudit(context.Background(), &AuditRecord{Principal: "alice", ActionID: "echo", Decision: DecisionDeny})
		}, 1},
		{"abort", func(l *Ledger) error { return l.WriteAbort(context.Background(), sampleIntent(3).GrantID, "refused") }, 1},
		{"receipt", func(l *Ledger) error { _, err := l.Append(context.Background(), sampleReceipt(4)); return err }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sy := &countSyncer{}
			l := openLedger(t, t.TempDir(), opts{syncer: sy})
			before := sy.n.Load()
			if err := tt.write(l); err != nil {
				t.Fatal(err)
			}
			if got := sy.n.Load() - before; got != tt.wantSyncs {
				t.Errorf("store syncs = %d, want %d", got, tt.wantSyncs)
			}
		})
	}
}

// TestRecentProofs: after a restart the ledger names the proofs of its
// intents whose replay entries have not expired, once; the proof is
// stored with the intent and an incomplete one is refused.
func TestRecentProofs(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(t0)
	open := func() *Ledger {
		l, err := Open(Config{Dir: dir, GateID: "gate-test"}, Deps{Clock: clk, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	if got := l.RecentProofs(); len(got) != 0 {
		t.Fatalf("RecentProofs of an empty ledger = %v", got)
	}
	old, live := withProof(1, false), withProof(2, true)
	old.Proof.ExpiresAt = FormatTime(t0.Add(10 * time.Second))
	for _, in := range []*Intent{old, live, sampleIntent(3)} {
		if err := l.WriteIntent(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	bad := withProof(4, false)
	bad.Proof.JTI = ""
	if err := l.WriteIntent(context.Background(), bad); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("WriteIntent(proof without jti) = %v, want ErrInvalidRecord", err)
	}
	if got := l.RecentProofs(); len(got) != 0 {
		t.Errorf("RecentProofs names proofs written since Open: %v", got)
	}
	l.Close()

	clk.Advance(30 * time.Second) // old's entry expired, live's not
	l = open()
	defer l.Close()
	got := l.RecentProofs()
	exp, err := ParseTime(live.Proof.ExpiresAt)
	if err != nil {
		t.Fatal(err)
	}
	want := UsedProof{JKT: live.Proof.JKT, JTI: live.Proof.JTI, ExpiresAt: exp}
	if len(got) != 1 || got[0].JKT != want.JKT || got[0].JTI != want.JTI || !got[0].ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("RecentProofs = %+v, want only %+v", got, want)
	}
	if again := l.RecentProofs(); again != nil {
		t.Errorf("second RecentProofs = %v, want nil", again)
	}
}

// TestObserveCommit: Deps.ObserveCommit sees one duration per group
// commit that wrote something.
func TestObserveCommit(t *testing.T) {
	var mu sync.Mutex
	var seen []time.Duration
	l, err := Open(Config{Dir: t.TempDir(), GateID: "gate-test"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop(),
		ObserveCommit: func(d time.Duration) { mu.Lock(); seen = append(seen, d); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		if _, err := l.Append(context.Background(), sampleReceipt(i)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("%d commits observed for 3 sequential appends, want 3", len(seen))
	}
	for _, d := range seen {
		if d <= 0 {
			t.Fatalf("observed %v", seen)
		}
	}
}

// TestOnReceiptGetsStoredBytes: OnReceipt is handed each receipt exactly as
// stored, and the bytes stay so after later group commits (the writer
// seals into a buffer it reuses).
func TestOnReceiptGetsStoredBytes(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]byte{}
	l, err := Open(Config{Dir: t.TempDir(), GateID: "gate-test"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop(),
		OnReceipt: func(id string, raw []byte) { mu.Lock(); got[id] = raw; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 20 {
		mustAppend(t, l, sampleReceipt(i))
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range 20 {
		id := sampleReceipt(i).ReceiptID
		stored, err := l.Get(id)
		if err != nil || !bytes.Equal(got[id], stored) {
			t.Fatalf("OnReceipt(%s) = %s, want the stored %s (%v)", id, got[id], stored, err)
		}
	}
}

// blockingSyncer blocks its first Sync until release is closed.
type blockingSyncer struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *blockingSyncer) Sync() error {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		<-s.release
	}
	return nil
}

// TestBusyCommitWindow: after a group of at least BusyCommitOps records,
// the next group waits (here: up to 30 s, far longer than the test looks)
// until it holds twice as many, and then commits them together; an idle
// ledger commits at once.
func TestBusyCommitWindow(t *testing.T) {
	sy := &blockingSyncer{entered: make(chan struct{}), release: make(chan struct{})}
	var commits atomic.Int64
	l, err := Open(Config{Dir: t.TempDir(), GateID: "g", BusyCommitWindow: 30 * time.Second, BusyCommitOps: 4},
		Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop(), Syncer: sy, ObserveCommit: func(time.Duration) { commits.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendAll := func(from, n int) *sync.WaitGroup {
		var wg sync.WaitGroup
		for i := from; i < from+n; i++ {
			wg.Go(func() { mustAppend(t, l, sampleReceipt(i)) })
		}
		return &wg
	}

	// Idle: the first group (one intent, held in its store sync) starts at once.
	go func() {
		if err := l.WriteIntent(context.Background(), sampleIntent(100)); err != nil {
			t.Error(err)
		}
	}()
	<-sy.entered
	// Five receipts queue behind it and form the next group: a busy one.
	queued := appendAll(0, 5)
	for len(l.ops) < 5 {
		time.Sleep(time.Millisecond)
	}
	close(sy.release)
	queued.Wait()
	before := commits.Load()

	// The group after a busy one waits for ten records.
	nine := appendAll(5, 9)
	time.Sleep(100 * time.Millisecond)
	if got := commits.Load(); got != before {
		t.Fatalf("%d commits while the group after a busy one held fewer than twice its records", got-before)
	}
	last := appendAll(14, 1)
	nine.Wait()
	last.Wait()
	if got := commits.Load() - before; got != 1 {
		t.Errorf("the ten records took %d commits, want 1", got)
	}
	if res := l.Verify(); !res.Intact || res.Receipts != 15 {
		t.Errorf("Verify = %+v", res)
	}
}

// TestVerifyDirWithKeys: a copy is only as trustworthy as the keys it is
// checked against. A forged copy (every record re-signed with the forger's
// key, which it also stores as its public keys) verifies intact against
// its own keys, and not against the genuine gate's published key set.
func TestVerifyDirWithKeys(t *testing.T) {
	genuine, forged := t.TempDir(), t.TempDir()
	var published map[string]ed25519.PublicKey
	for _, dir := range []string{genuine, forged} {
		l := openLedger(t, dir, opts{})
		for i := range 3 {
			mustAppend(t, l, sampleReceipt(i))
		}
		if dir == genuine {
			k, err := ParseKeySet(l.KeySet())
			if err != nil {
				t.Fatal(err)
			}
			published = k
		}
		l.Close()
	}
	own, err := PublicKeysDir(forged)
	if err != nil || len(own) != 1 {
		t.Fatalf("PublicKeysDir = %v, %v, want the forger's one key", own, err)
	}
	for _, tt := range []struct {
		name   string
		dir    string
		keys   map[string]ed25519.PublicKey
		intact bool
	}{
		{"genuine copy, published keys", genuine, published, true},
		{"forged copy, its own keys", forged, own, true},
		{"forged copy, published keys", forged, published, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := VerifyDirWithKeys(tt.dir, tt.keys)
			if err != nil {
				t.Fatal(err)
			}
			if res.Intact != tt.intact {
				t.Fatalf("VerifyDirWithKeys = intact %v (break %+v), want %v", res.Intact, res.FirstBreak, tt.intact)
			}
		})
	}
}

// The receipt signing key can forge evidence: like the lease keys, a key
// file that group or others may read is refused, not used.
func TestOpenRefusesLooseSigningKey(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{})
	l.Close()
	key := filepath.Join(dir, keysDirName, signingKeyFile)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key %s: %v, mode %v, want 0600", key, err, fi.Mode().Perm())
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		l, err := Open(Config{Dir: dir, GateID: "gate-test"}, Deps{Clock: clock.NewFake(t0), Logger: zerolog.Nop()})
		if err == nil {
			l.Close()
			t.Fatalf("Open with signing key mode %04o = nil error, want a refusal", mode)
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("Open with signing key mode %04o = %v, want it to say chmod 600", mode, err)
		}
	}
	if err := os.Chmod(key, 0o400); err != nil {
		t.Fatal(err)
	}
	openLedger(t, dir, opts{}) // 0400 is private too
}

// TestOutputStoredCanonical: an output sent in any JSON spelling is stored
// (and hashed and signed) in its JCS form, so a verifier that
// re-canonicalises the stored receipt gets the same bytes.
func TestOutputStoredCanonical(t *testing.T) {
	l := openLedger(t, t.TempDir(), opts{})
	r := sampleReceipt(1)
	r.Output = json.RawMessage(`{ "b": 1, "a": [1.50, 2e0, "\u0041"] }`)
	mustAppend(t, l, r)
	raw, err := l.Get(r.ReceiptID)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"output":{"a":[1.5,2,"A"],"b":1}`; !strings.Contains(string(raw), want) {
		t.Errorf("stored receipt %s, want it to hold %s", raw, want)
	}
	if got := VerifyReceipt(raw, l.Keys()); got != StatusValid {
		t.Errorf("VerifyReceipt = %s, want %s", got, StatusValid)
	}
}
