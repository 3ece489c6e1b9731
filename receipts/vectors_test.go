package receipts

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"testing"
)

// vectorsPath is the shared receipt vectors written by
// definitions/test_vectors/gen.
const vectorsPath = "../definitions/test_vectors/receipts/receipts.json"

type receiptVectors struct {
	Key struct {
		X   string `json:"x"`
		D   string `json:"d"`
		Kid string `json:"kid"`
	} `json:"key"`
	Receipts []struct {
		Receipt json.RawMessage `json:"receipt"`
		Valid   bool            `json:"valid"`
		Note    string          `json:"note"`
	} `json:"receipts"`
}

func TestReceiptVectors(t *testing.T) {
	data, err := os.ReadFile(vectorsPath)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read %s: %v", vectorsPath, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var v receiptVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	x, err1 := b64.DecodeString(v.Key.X)
	d, err2 := b64.DecodeString(v.Key.D)
	if err1 != nil || err2 != nil || len(d) != ed25519.SeedSize {
		t.Fatalf("vector key does not decode: %v %v", err1, err2)
	}
	s := newSigner(ed25519.NewKeyFromSeed(d))
	if got := Thumbprint(ed25519.PublicKey(x)); got != v.Key.Kid || s.kid != v.Key.Kid {
		t.Fatalf("Thumbprint(vector key) = %s (from d: %s), want %s", got, s.kid, v.Key.Kid)
	}
	keys := map[string]ed25519.PublicKey{v.Key.Kid: ed25519.PublicKey(x)}
	var tip chainTip
	for _, c := range v.Receipts {
		t.Run(c.Note, func(t *testing.T) {
			want := StatusInvalid
			if c.Valid {
				want = StatusValid
			}
			if got := VerifyReceipt(c.Receipt, keys); got != want {
				t.Fatalf("VerifyReceipt = %s, want %s", got, want)
			}
			if !c.Valid {
				return
			}
			// Re-sealing the decoded receipt with our struct and signer
			// gives the same hash and (deterministic) signature.
			var r Receipt
			if err := json.Unmarshal(c.Receipt, &r); err != nil {
				t.Fatal(err)
			}
			wantHash, wantSig := r.Hash, r.Signature
			r.Hash, r.Signature, r.KeyID = "", "", ""
			unsigned, err := appendReceipt(nil, &r)
			if err != nil {
				t.Fatal(err)
			}
			sl, err := s.seal(unsigned)
			if err != nil {
				t.Fatal(err)
			}
			if sl.hash != wantHash || sl.sig != wantSig {
				t.Errorf("seal(receipt %d) = %s %s, want %s %s", r.Seq, sl.hash, sl.sig, wantHash, wantSig)
			}
			m := recordMeta{Seq: r.Seq, PrevHash: r.PrevHash, Hash: wantHash}
			if why := tip.follows(&m); why != "" {
				t.Errorf("chain link of seq %d: %s", r.Seq, why)
			}
			tip = chainTip{seq: r.Seq, hash: wantHash}
		})
	}
}
