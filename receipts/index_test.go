package receipts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseUUID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"v7", "0190d6a4-8c1e-7abc-8def-0123456789ab", true},
		{"all zero", "00000000-0000-0000-0000-000000000000", true},
		{"upper case", "0190D6A4-8C1E-7ABC-8DEF-0123456789AB", false},
		{"no hyphens", "0190d6a48c1e7abc8def0123456789ab", false},
		{"hyphen misplaced", "0190d6a48-c1e-7abc-8def-0123456789a", false},
		{"not hex", "0190d6a4-8c1e-7abc-8def-0123456789ag", false},
		{"short", "0190d6a4-8c1e-7abc-8def-0123456789a", false},
		{"other id", "rcpt-0001", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, ok := parseUUID(tt.in)
			if ok != tt.ok {
				t.Fatalf("parseUUID(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if ok && k.String() != tt.in {
				t.Errorf("parseUUID(%q).String() = %q, want the input", tt.in, k.String())
			}
		})
	}
}

// TestLookupByID covers both index forms (canonical UUIDs and other ids),
// records longer than one read, approval lookups, and the same lookups
// after Open rebuilt the index from the file.
func TestLookupByID(t *testing.T) {
	dir := t.TempDir()
	l := openLedger(t, dir, opts{cap: 1 << 20})
	long := json.RawMessage(`{"text":"` + strings.Repeat("x", 3*readChunk+17) + `"}`)
	tests := []struct {
		name       string
		id         string
		output     json.RawMessage
		approvalID string
	}{
		{"uuid", "0190d6a4-8c1e-7abc-8def-0123456789ab", nil, ""},
		{"other id", "rcpt-7", nil, ""},
		{"upper-case uuid is another id", "0190D6A4-8C1E-7ABC-8DEF-0123456789AB", nil, ""},
		{"uuid, long record", "0190d6a4-8c1e-7abc-8def-0123456789ac", long, ""},
		{"other id, long record", "rcpt-long", long, ""},
		{"uuid approval", "0190d6a4-8c1e-7abc-8def-0123456789ad", nil, "0190d6a4-0000-7abc-8def-0123456789ad"},
		{"other approval", "rcpt-appr", nil, "appr-9"},
	}
	want := map[string][]byte{}
	for i, tt := range tests {
		r := sampleReceipt(i)
		r.ReceiptID = tt.id
		if tt.output != nil {
			r.Output = tt.output
		}
		if tt.approvalID != "" {
			r.Approval = &Approval{Kind: "operator", ApprovalID: tt.approvalID, ApprovedBy: "op", ApprovedAt: FormatTime(t0)}
		}
		got := mustAppend(t, l, r)
		b := storedForm(t, got)
		want[tt.id] = b
	}
	check := func(t *testing.T, l *Ledger) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				raw, err := l.Get(tt.id)
				if err != nil || !bytes.Equal(raw, want[tt.id]) {
					t.Fatalf("Get(%q) = %.80s…, %v, want the stored bytes", tt.id, raw, err)
				}
				if tt.approvalID != "" {
					r, err := l.FindByApproval(tt.approvalID)
					if err != nil || r.ReceiptID != tt.id {
						t.Errorf("FindByApproval(%q) = %v, %v, want receipt %s", tt.approvalID, r, err, tt.id)
					}
				}
			})
		}
		for _, id := range []string{"0190d6a4-8c1e-7abc-8def-0123456789ff", "rcpt-8", ""} {
			if _, err := l.Get(id); err != ErrNotFound {
				t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
			}
		}
		if _, err := l.FindByApproval("0190d6a4-8c1e-7abc-8def-0123456789ab"); err != ErrNotFound {
			t.Errorf("FindByApproval(receipt id) = %v, want ErrNotFound", err)
		}
		if n, _ := l.Stats(); n != len(tests) {
			t.Errorf("Stats receipts = %d, want %d", n, len(tests))
		}
	}
	t.Run("fresh", func(t *testing.T) { check(t, l) })
	l.Close()
	t.Run("reopened", func(t *testing.T) { check(t, openLedger(t, dir, opts{cap: 1 << 20})) })
}

// TestIndexMemoryPerRecord measures the live heap the indexes keep per
// execute (one receipt with a UUIDv7 id and one decision record), as the
// commit path builds them, next to the string-keyed layout they replaced.
// It reports the numbers and fails only far above the expected ≈ 60 B.
func TestIndexMemoryPerRecord(t *testing.T) {
	const n = 50_000
	principals := []string{"uid:1000", "uid:1001", "agent:ci"}
	actions := []string{"echo", "http.get", "fs.read"}
	decisions := []string{DecisionAllow, DecisionDeny}
	ids := make([]string, n)
	metas := make([]recordMeta, n)
	now := t0
	for i := range n {
		id, err := newUUIDv7(now.Add(time.Duration(i)*time.Millisecond), func(b []byte) error {
			copy(b, fmt.Sprintf("%010d", i))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
		metas[i] = recordMeta{
			Time:      FormatTime(now.Add(time.Duration(i) * time.Millisecond)),
			Principal: strings.Clone(principals[i%len(principals)]),
			ActionID:  strings.Clone(actions[i%len(actions)]),
			Decision:  strings.Clone(decisions[i%len(decisions)]),
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}

	// The layout before: string keys and values, per-entry strings.
	type oldLoc struct {
		off int64
		n   int
	}
	type oldAudit struct {
		oldLoc
		ms                            int64
		principal, actionID, decision string
	}
	before := heap()
	oldByID := map[string]oldLoc{}
	var oldAudits []oldAudit
	for i := range n {
		// The old index kept the strings decoded from (or handed to) the
		// writer, one allocation each.
		oldByID[strings.Clone(ids[i])] = oldLoc{int64(i) * 1000, 700}
		m := &metas[i]
		oldAudits = append(oldAudits, oldAudit{oldLoc{int64(i)*1000 + 700, 300}, int64(i),
			strings.Clone(m.Principal), strings.Clone(m.ActionID), strings.Clone(m.Decision)})
	}
	oldPer := float64(heap()-before) / n
	runtime.KeepAlive(oldByID)
	runtime.KeepAlive(oldAudits)
	oldByID, oldAudits = nil, nil

	before = heap()
	byID := newIDIndex()
	audit := newAuditIndex(DefaultInternCap)
	for i := range n {
		byID.put(ids[i], int64(i)*1000)
		audit.add(int64(i)*1000+700, &metas[i])
	}
	newPer := float64(heap()-before) / n
	runtime.KeepAlive(&byID)
	runtime.KeepAlive(&audit)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(metas)

	t.Logf("index heap per execute (receipt + decision record), %d executes: before %.0f B, now %.0f B", n, oldPer, newPer)
	if newPer > 128 {
		t.Errorf("index heap per execute = %.0f B, want <= 128 B (expected ≈ 60)", newPer)
	}
	if byID.len() != n || len(audit.entries) != n || len(audit.principals.names) != len(principals) {
		t.Errorf("index sizes = %d, %d, %d principals; want %d, %d, %d", byID.len(), len(audit.entries), len(audit.principals.names), n, n, len(principals))
	}
}

// TestInternCap checks that values past the cap are not interned and that
// an entry without an id never holds an interned value.
func TestInternCap(t *testing.T) {
	tab := newInternTable(2)
	got := []uint16{tab.intern("a"), tab.intern("b"), tab.intern("c"), tab.intern("a"), tab.intern("c")}
	want := []uint16{0, 1, noName, 0, noName}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("intern(a, b, c, a, c) = %v, want %v", got, want)
	}
	tests := []struct {
		name  string
		value string
		id    uint16
		want  matchResult
	}{
		{"no filter", "", 0, matchYes},
		{"interned, same", "a", 0, matchYes},
		{"interned, other", "a", 1, matchNo},
		{"interned, entry past cap", "a", noName, matchNo},
		{"not interned, entry interned", "c", 0, matchNo},
		{"not interned, entry past cap", "c", noName, matchRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tab.filter(tt.value).match(tt.id); got != tt.want {
				t.Errorf("filter(%q).match(%d) = %d, want %d", tt.value, tt.id, got, tt.want)
			}
		})
	}
}
