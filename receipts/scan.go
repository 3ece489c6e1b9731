package receipts

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Files inside Config.Dir.
const (
	ledgerFileName = "ledger.jsonl" // intents, aborts, receipts and audit records, one per line
	headFileName   = "head.json"    // the signed head (temp + rename)
	lockFileName   = "ledger.lock"  // flocked by the open Ledger
)

// Every ledger line is {"type":"<t>","record":<record JSON>}\n. The record
// bytes are stored exactly once, so a receipt is served as the byte slice
// between the prefix and the final "}\n".
const (
	prefixReceipt = `{"type":"receipt","record":`
	prefixAudit   = `{"type":"audit","record":`
	prefixIntent  = `{"type":"intent","record":`
	prefixAbort   = `{"type":"abort","record":`
)

type lineType int

const (
	lineInvalid lineType = iota
	lineReceipt
	lineAudit
	lineIntent
	lineAbort
)

// Chain names used in Break.
const (
	ChainReceipts = "receipts"
	ChainAudit    = "audit"
	ChainFile     = "file"
	ChainHead     = "head"
)

func linePrefix(t lineType) string {
	switch t {
	case lineReceipt:
		return prefixReceipt
	case lineAudit:
		return prefixAudit
	case lineIntent:
		return prefixIntent
	case lineAbort:
		return prefixAbort
	}
	return ""
}

// splitLine returns the type and record bytes of a complete line (with its
// trailing newline). The record must be a JSON object.
func splitLine(line []byte) (lineType, []byte) {
	if len(line) < 3 || !bytes.HasSuffix(line, []byte("}\n")) {
		return lineInvalid, nil
	}
	for _, t := range []lineType{lineReceipt, lineAudit, lineIntent, lineAbort} {
		p := linePrefix(t)
		if bytes.HasPrefix(line, []byte(p)) {
			rec := line[len(p) : len(line)-2]
			if len(rec) < 2 || rec[0] != '{' || !json.Valid(rec) {
				return lineInvalid, nil
			}
			return t, rec
		}
	}
	return lineInvalid, nil
}

// appendLine appends one line to buf and returns the offset of the record
// bytes within buf.
func appendLine(buf *bytes.Buffer, t lineType, rec []byte) int {
	buf.WriteString(linePrefix(t))
	off := buf.Len()
	buf.Write(rec)
	buf.WriteString("}\n")
	return off
}

// beginLine writes the prefix of a line of type t and returns where it
// began (for a rollback), where its record starts, and buf's spare room
// for the record to be encoded into (appendReceipt, sealAppend), so the
// writer seals records straight into its group's buffer. endLine ends it.
func beginLine(buf *bytes.Buffer, t lineType) (mark, off int, room []byte) {
	mark = buf.Len()
	buf.WriteString(linePrefix(t))
	buf.Grow(recordRoom)
	return mark, buf.Len(), buf.AvailableBuffer()
}

// recordRoom is the room beginLine makes: more than a receipt with a
// small output or a decision record takes, so they are encoded in place.
const recordRoom = 4 << 10

// endLine adds rec, encoded into beginLine's room (or a copy of it, if it
// outgrew the room), to buf and ends the line.
func endLine(buf *bytes.Buffer, rec []byte) {
	buf.Write(rec)
	buf.WriteString("}\n")
}

// recordMeta is what scanning needs from a receipt or audit record.
type recordMeta struct {
	Seq       int64   `json:"seq"`
	PrevHash  *string `json:"prev_hash"`
	Hash      string  `json:"hash"`
	Signature string  `json:"signature"`
	KeyID     string  `json:"key_id"`
	// receipts
	ReceiptID string `json:"receipt_id"`
	GrantID   string `json:"grant_id"`
	Approval  *struct {
		ApprovalID string `json:"approval_id"`
	} `json:"approval"`
	// audit
	ID        string `json:"id"`
	Time      string `json:"time"`
	Principal string `json:"principal"`
	ActionID  string `json:"action_id"`
	Decision  string `json:"decision"`
}

func (m *recordMeta) signed() signedFields {
	return signedFields{Hash: m.Hash, Signature: m.Signature, KeyID: m.KeyID}
}

// chainTip is the end of one hash chain.
type chainTip struct {
	seq  int64
	hash string
}

// follows reports why m does not continue the chain ending at c ("" = ok).
func (c chainTip) follows(m *recordMeta) string {
	if m.Seq != c.seq+1 {
		return fmt.Sprintf("seq %d follows seq %d", m.Seq, c.seq)
	}
	if m.Hash == "" {
		return "hash missing"
	}
	if c.seq == 0 {
		if m.PrevHash != nil {
			return "first record has a prev_hash"
		}
		return ""
	}
	if m.PrevHash == nil || *m.PrevHash != c.hash {
		return fmt.Sprintf("prev_hash does not link to seq %d", c.seq)
	}
	return ""
}

// line is one line read from the ledger.
type line struct {
	off      int64 // offset of the line start
	data     []byte
	complete bool // ends with '\n'
}

// readLines calls fn for every line of r.
func readLines(r io.Reader, fn func(line) error) error {
	br := bufio.NewReaderSize(r, 1<<16)
	var off int64
	for {
		data, err := br.ReadBytes('\n')
		if len(data) > 0 {
			l := line{off: off, data: data, complete: data[len(data)-1] == '\n'}
			off += int64(len(data))
			if ferr := fn(l); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Break is the first place a verification failed.
type Break struct {
	Chain  string `json:"chain"`  // "receipts", "audit", "file" or "head"
	Seq    int64  `json:"seq"`    // the record's seq (0 for file/head breaks without one)
	Offset int64  `json:"offset"` // byte offset of the line in the ledger file
	Reason string `json:"reason"`
}

// VerifyResult is the answer of GET /v1/audit/verify.
type VerifyResult struct {
	Intact       bool   `json:"intact"`
	Receipts     int    `json:"receipts"`
	AuditRecords int    `json:"audit_records"`
	FirstBreak   *Break `json:"first_break"`
	Head         Head   `json:"head"`
}

// verifyLedger checks every line of r: hashes, signatures, seq continuity
// and prev_hash links of both chains, then compares the chain ends with
// the signed head (nil head = no head, which is a break when any record
// exists).
func verifyLedger(r io.Reader, keys map[string]ed25519.PublicKey, head *Head) (VerifyResult, error) {
	var res VerifyResult
	brk := func(b Break) {
		if res.FirstBreak == nil {
			res.FirstBreak = &b
		}
	}
	var rtip, atip chainTip
	var rAtHead, aAtHead string
	check := func(chain string, tip *chainTip, l line, rec []byte) {
		var m recordMeta
		if err := json.Unmarshal(rec, &m); err != nil {
			brk(Break{Chain: chain, Offset: l.off, Reason: "record does not decode"})
			return
		}
		if why := tip.follows(&m); why != "" {
			brk(Break{Chain: chain, Seq: m.Seq, Offset: l.off, Reason: why})
		}
		if err := checkRecord(rec, &m, chain == ChainAudit, keys); err != nil {
			brk(Break{Chain: chain, Seq: m.Seq, Offset: l.off, Reason: err.Error()})
		}
		// An unsigned record is authenticated only by the signed head
		// (directly or through a later link): past the head, nothing
		// vouches for it, and anyone could have appended it.
		if chain == ChainAudit && m.Signature == "" && (head == nil || m.Seq > head.AuditSeq) {
			brk(Break{Chain: chain, Seq: m.Seq, Offset: l.off, Reason: "unsigned record not covered by the signed head"})
		}
		*tip = chainTip{seq: m.Seq, hash: m.Hash}
		if head != nil {
			if chain == ChainReceipts && m.Seq == head.Seq {
				rAtHead = m.Hash
			}
			if chain == ChainAudit && m.Seq == head.AuditSeq {
				aAtHead = m.Hash
			}
		}
	}
	err := readLines(r, func(l line) error {
		if !l.complete {
			brk(Break{Chain: ChainFile, Offset: l.off, Reason: "torn line at end of file"})
			return nil
		}
		t, rec := splitLine(l.data)
		switch t {
		case lineReceipt:
			res.Receipts++
			check(ChainReceipts, &rtip, l, rec)
		case lineAudit:
			res.AuditRecords++
			check(ChainAudit, &atip, l, rec)
		case lineIntent, lineAbort:
		default:
			brk(Break{Chain: ChainFile, Offset: l.off, Reason: "malformed line"})
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	switch {
	case head == nil:
		if res.Receipts+res.AuditRecords > 0 {
			brk(Break{Chain: ChainHead, Reason: "no signed head"})
		}
	default:
		res.Head = *head
		if err := head.verify(keys); err != nil {
			brk(Break{Chain: ChainHead, Seq: head.Seq, Reason: err.Error()})
		}
		if why := head.covers(rtip.seq, rAtHead, atip.seq, aAtHead); why != "" {
			brk(Break{Chain: ChainHead, Seq: head.Seq, Reason: why})
		}
	}
	res.Intact = res.FirstBreak == nil
	return res, nil
}

// VerifyDir verifies a ledger directory offline (a copy of a gate's ledger
// dir) with the public keys stored in it. The keys prove nothing against
// someone who rewrote the whole directory: compare the key ids with a copy
// kept elsewhere (the gate's JWKS) and the head with one carried by events.
func VerifyDir(dir string) (VerifyResult, error) {
	return verifyDir(OSFS{}, dir)
}

// VerifyDirWithKeys is VerifyDir trusting keys (a set the operator kept
// or fetched from GET /v1/receipt-keys, see ParseKeySet) instead of the
// public keys stored in the copy: whoever can rewrite a copy can also
// replace its keys and re-sign every record with a key of their own.
func VerifyDirWithKeys(dir string, keys map[string]ed25519.PublicKey) (VerifyResult, error) {
	return verifyDirKeys(OSFS{}, dir, keys)
}

// PublicKeysDir returns the receipt public keys stored in the ledger
// directory dir: the keys VerifyDir trusts.
func PublicKeysDir(dir string) (map[string]ed25519.PublicKey, error) {
	return readPublicKeys(OSFS{}, dir)
}

func verifyDir(fsys FS, dir string) (VerifyResult, error) {
	keys, err := readPublicKeys(fsys, dir)
	if err != nil {
		return VerifyResult{}, err
	}
	return verifyDirKeys(fsys, dir, keys)
}

func verifyDirKeys(fsys FS, dir string, keys map[string]ed25519.PublicKey) (VerifyResult, error) {
	head, err := readHead(fsys, dir)
	if err != nil {
		return VerifyResult{}, err
	}
	f, err := fsys.OpenFile(filepath.Join(dir, ledgerFileName), 0, 0)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("receipts: open ledger: %w", err)
	}
	defer f.Close()
	return verifyLedger(f, keys, head)
}
