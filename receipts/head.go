package receipts

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Head is the signed end of the ledger after a group commit: the last
// receipt (Seq, Hash) and the last audit record (AuditSeq, AuditHash).
// Hash and AuditHash are "" while their chain is empty. Signature is
// Ed25519 over the ASCII bytes of "sha256:<hex>" of the JCS form of the
// head without signature and key_id — the same scheme as a record, with
// "hash" kept because it is the chain's hash, not the head's.
type Head struct {
	Seq       int64  `json:"seq"`
	Hash      string `json:"hash"`
	AuditSeq  int64  `json:"audit_seq"`
	AuditHash string `json:"audit_hash"`
	GateID    string `json:"gate_id"`
	SignedAt  string `json:"signed_at"`
	KeyID     string `json:"key_id,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// digest is the hash the head's signature covers.
func (h Head) digest() (string, error) {
	h.KeyID, h.Signature = "", ""
	b, err := appendHead(make([]byte, 0, 256), &h)
	if err != nil {
		return "", err
	}
	return hashBytes(b), nil
}

func (s *signer) signHead(h Head) (Head, error) {
	d, err := h.digest()
	if err != nil {
		return Head{}, err
	}
	h.KeyID = s.kid
	h.Signature = s.sign(d)
	return h, nil
}

var errHeadSignature = errors.New("head signature does not verify")

func (h Head) verify(keys map[string]ed25519.PublicKey) error {
	pub, ok := keys[h.KeyID]
	if !ok {
		return errors.New("head signed by an unknown key_id")
	}
	d, err := h.digest()
	if err != nil {
		return err
	}
	sig, err := b64.DecodeString(h.Signature)
	if err != nil || !ed25519.Verify(pub, []byte(d), sig) {
		return errHeadSignature
	}
	return nil
}

// covers reports why the chain ends (last seq, and the hash stored at the
// head's seq) disagree with the head ("" = they agree). A head may lag
// the ledger (it is written after the commit) but never lead it.
func (h Head) covers(lastSeq int64, hashAtHead string, lastAuditSeq int64, auditHashAtHead string) string {
	switch {
	case h.Seq > lastSeq:
		return fmt.Sprintf("head claims receipt seq %d but the ledger ends at seq %d", h.Seq, lastSeq)
	case h.Seq > 0 && hashAtHead != h.Hash:
		return fmt.Sprintf("head hash differs from receipt seq %d", h.Seq)
	case h.AuditSeq > lastAuditSeq:
		return fmt.Sprintf("head claims audit seq %d but the ledger ends at seq %d", h.AuditSeq, lastAuditSeq)
	case h.AuditSeq > 0 && auditHashAtHead != h.AuditHash:
		return fmt.Sprintf("head hash differs from audit seq %d", h.AuditSeq)
	}
	return ""
}

// readHead reads dir/head.json; (nil, nil) when there is none.
func readHead(fsys FS, dir string) (*Head, error) {
	data, err := fsys.ReadFile(filepath.Join(dir, headFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receipts: read head: %w", err)
	}
	var h Head
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%w: head does not decode: %w", ErrHeadMismatch, err)
	}
	return &h, nil
}
