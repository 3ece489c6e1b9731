package receipts

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// editAudit applies edit to the members of an audit line's record.
func editAudit(t *testing.T, line []byte, edit func(map[string]json.RawMessage)) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	rec := bytes.TrimSuffix(bytes.TrimPrefix(line, []byte(prefixAudit)), []byte("}\n"))
	if err := json.Unmarshal(rec, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(prefixAudit), out...), "}\n"...)
}

// rehash replaces the hash member of an audit line's record with the hash
// of its (changed) content, as a forger without the signing key could.
func rehash(t *testing.T, line []byte) []byte {
	t.Helper()
	rec := bytes.TrimSuffix(bytes.TrimPrefix(line, []byte(prefixAudit)), []byte("}\n"))
	h, err := recordHash(rec)
	if err != nil {
		t.Fatal(err)
	}
	return editAudit(t, line, func(m map[string]json.RawMessage) { m["hash"], _ = json.Marshal(h) })
}

// fillDecisions appends one receipt and one audit record per decision.
func fillDecisions(t *testing.T, l *Ledger, decisions ...string) {
	t.Helper()
	for i, d := range decisions {
		mustAppend(t, l, sampleReceipt(i))
		a := &AuditRecord{Principal: "alice", ActionID: "echo", Decision: d}
		if d == DecisionDenied {
			a.ApprovalID, a.DecidedBy = "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "uid:0"
		}
		if err := l.AppendAudit(context.Background(), a); err != nil {
			t.Fatalf("AppendAudit(%s) = %v", d, err)
		}
	}
}

// TestUnsignedAllowRecords: allow records carry only a hash; the chain and
// the signed head authenticate them, and every other decision stays signed.
func TestUnsignedAllowRecords(t *testing.T) {
	decisions := []string{DecisionAllow, DecisionDeny, DecisionAllow, DecisionAllow}
	tests := []struct {
		name      string
		mutate    func(t *testing.T, lines [][]byte) [][]byte
		wantChain string // "" = intact
		wantSeq   int64
	}{
		{"untouched", func(t *testing.T, lines [][]byte) [][]byte { return lines }, "", 0},
		{"allow record changed, hash kept", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 1)
			lines[i] = bytes.Replace(lines[i], []byte(`"principal":"alice"`), []byte(`"principal":"mallory"`), 1)
			return lines
		}, ChainAudit, 1},
		{"allow record changed and rehashed, before a signed record", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 1)
			lines[i] = rehash(t, bytes.Replace(lines[i], []byte(`"principal":"alice"`), []byte(`"principal":"mallory"`), 1))
			return lines
		}, ChainAudit, 2},
		{"allow record changed and rehashed, before another allow record", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 3)
			lines[i] = rehash(t, bytes.Replace(lines[i], []byte(`"principal":"alice"`), []byte(`"principal":"mallory"`), 1))
			return lines
		}, ChainAudit, 4},
		{"last allow record changed and rehashed", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 4)
			lines[i] = rehash(t, bytes.Replace(lines[i], []byte(`"principal":"alice"`), []byte(`"principal":"mallory"`), 1))
			return lines
		}, ChainHead, 4},
		{"deny record turned into an unsigned allow", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 2)
			lines[i] = rehash(t, editAudit(t, lines[i], func(m map[string]json.RawMessage) {
				delete(m, "signature")
				delete(m, "key_id")
				m["decision"] = json.RawMessage(`"allow"`)
			}))
			return lines
		}, ChainAudit, 3},
		{"signature stripped from the deny record", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 2)
			lines[i] = editAudit(t, lines[i], func(m map[string]json.RawMessage) {
				delete(m, "signature")
				delete(m, "key_id")
			})
			return lines
		}, ChainAudit, 2},
		// The head does not cover a record past it, and an unsigned one has
		// nothing else to vouch for it: a forger appends decisions at will.
		{"allow record forged past the signed head", func(t *testing.T, lines [][]byte) [][]byte {
			last := lines[lineOf(t, lines, prefixAudit, 4)]
			forged := rehash(t, editAudit(t, last, func(m map[string]json.RawMessage) {
				m["prev_hash"] = m["hash"]
				m["seq"] = json.RawMessage(`5`)
				m["id"] = json.RawMessage(`"0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"`)
				m["principal"] = json.RawMessage(`"mallory"`)
			}))
			return append(lines, forged)
		}, ChainAudit, 5},
		{"bogus signature added to an allow record", func(t *testing.T, lines [][]byte) [][]byte {
			i := lineOf(t, lines, prefixAudit, 1)
			lines[i] = bytes.Replace(lines[i], []byte(`"hash":`), []byte(`"signature":"AAAA","hash":`), 1)
			return lines
		}, ChainAudit, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLedger(t, dir, opts{})
			fillDecisions(t, l, decisions...)
			l.Close()
			lines := readLedgerLines(t, dir)
			if tt.name == "untouched" {
				for seq, d := range decisions {
					line := lines[lineOf(t, lines, prefixAudit, seq+1)]
					signed := bytes.Contains(line, []byte(`"signature":`))
					if signed != (d != DecisionAllow) {
						t.Errorf("audit %d (%s) signed = %v, want %v", seq+1, d, signed, d != DecisionAllow)
					}
				}
			}
			writeLedgerLines(t, dir, tt.mutate(t, lines))
			res, err := VerifyDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantChain == "" {
				if !res.Intact {
					t.Fatalf("VerifyDir() break %+v, want intact", res.FirstBreak)
				}
				return
			}
			if res.Intact || res.FirstBreak.Chain != tt.wantChain || res.FirstBreak.Seq != tt.wantSeq {
				t.Fatalf("VerifyDir() = intact %v break %+v, want break %s seq %d", res.Intact, res.FirstBreak, tt.wantChain, tt.wantSeq)
			}
		})
	}
}

// TestSignedAllowRecordStillVerifies: ledgers written before allow records
// went unsigned keep verifying, and such a record is checked in full.
func TestSignedAllowRecordStillVerifies(t *testing.T) {
	l := openLedger(t, t.TempDir(), opts{})
	s := l.signer.Load()
	unsigned, err := appendAudit(nil, &AuditRecord{ID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Seq: 1, GateID: "g", Time: FormatTime(t0), Decision: DecisionAllow})
	if err != nil {
		t.Fatal(err)
	}
	sl, err := s.seal(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	if got := VerifyAuditRecord(sl.raw, l.Keys()); got != StatusValid {
		t.Errorf("VerifyAuditRecord(signed allow) = %s, want %s", got, StatusValid)
	}
	forged := bytes.Replace(sl.raw, []byte(`"signature":"`), []byte(`"signature":"A`), 1)
	if got := VerifyAuditRecord(forged, l.Keys()); got != StatusInvalid {
		t.Errorf("VerifyAuditRecord(signed allow, bad signature) = %s, want %s", got, StatusInvalid)
	}
	hashOnly, err := sealHashOnly(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	if got := VerifyAuditRecord(hashOnly.raw, l.Keys()); got != StatusChained {
		t.Errorf("VerifyAuditRecord(hash-only allow) = %s, want %s", got, StatusChained)
	}
	deny := bytes.Replace(hashOnly.raw, []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
	if got := VerifyAuditRecord(deny, l.Keys()); got == StatusValid || got == StatusChained {
		t.Errorf("VerifyAuditRecord(unsigned deny) = %s, want a refusal", got)
	}
}
