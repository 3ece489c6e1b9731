package sdk_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/sdk"
)

// The SDK's JCS, thumbprints, htu normalisation and receipt verification
// agree with definitions/test_vectors (shared with the gate and the other SDKs).

func TestJCSVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			Name, Input, Canonical, SHA256 string
		} `json:"cases"`
		Invalid []struct{ Name, Input string } `json:"invalid"`
	}
	loadVectors(t, "jcs/golden.json", &f)
	if len(f.Cases) == 0 || len(f.Invalid) == 0 {
		t.Fatal("no JCS vectors")
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			got, err := sdk.CanonicalJSON([]byte(c.Input))
			if err != nil || string(got) != c.Canonical {
				t.Fatalf("CanonicalJSON(%q) = %q, %v, want %q", c.Input, got, err, c.Canonical)
			}
			sum := sha256.Sum256(got)
			if h := "sha256:" + hex.EncodeToString(sum[:]); h != c.SHA256 {
				t.Errorf("sha256 = %s, want %s", h, c.SHA256)
			}
		})
	}
	for _, c := range f.Invalid {
		t.Run("invalid_"+c.Name, func(t *testing.T) {
			if got, err := sdk.CanonicalJSON([]byte(c.Input)); err == nil {
				t.Errorf("CanonicalJSON(%q) = %q, want an error", c.Input, got)
			}
		})
	}
}

func TestThumbprintVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			Name       string            `json:"name"`
			JWK        map[string]string `json:"jwk"`
			Thumbprint string            `json:"thumbprint"`
		} `json:"cases"`
	}
	loadVectors(t, "dpop/thumbprints.json", &f)
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if got := sdk.ThumbprintForTest(c.JWK["x"], c.JWK["y"]); got != c.Thumbprint {
				t.Errorf("thumbprint(%s) = %s, want %s", c.Name, got, c.Thumbprint)
			}
		})
	}
}

func TestHTUVectors(t *testing.T) {
	var f struct {
		Cases []struct{ Input, Normalized string } `json:"cases"`
	}
	loadVectors(t, "dpop/htu.json", &f)
	for i, c := range f.Cases {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if got := sdk.NormalizeHTUForTest(c.Input); got != c.Normalized {
				t.Errorf("normalizeHTU(%q) = %q, want %q", c.Input, got, c.Normalized)
			}
		})
	}
}

// TestStubVerifierAgreesWithProofVectors keeps the test stub's proof check
// honest: it must accept exactly the valid vector proofs.
func TestStubVerifierAgreesWithProofVectors(t *testing.T) {
	var f struct {
		JKT        string `json:"jkt"`
		LeaseToken string `json:"lease_token"`
		Now        int64  `json:"now"`
		Proofs     []struct {
			Name        string `json:"name"`
			Proof       string `json:"proof"`
			HTM         string `json:"htm"`
			HTU         string `json:"htu"`
			Body        string `json:"body_b64url"`
			ExpectValid bool   `json:"expect_valid"`
		} `json:"proofs"`
	}
	loadVectors(t, "dpop/proofs.json", &f)
	for _, p := range f.Proofs {
		t.Run(p.Name, func(t *testing.T) {
			body, _ := base64.RawURLEncoding.DecodeString(p.Body)
			_, reason := verifyProof(p.Proof, f.JKT, p.HTM, p.HTU, f.LeaseToken, body, f.Now)
			if (reason == "") != p.ExpectValid {
				t.Errorf("verifyProof(%s) = %q, want valid=%v", p.Name, reason, p.ExpectValid)
			}
		})
	}
}

func TestReceiptVectors(t *testing.T) {
	var f receiptVectorFile
	loadVectors(t, "receipts/receipts.json", &f)
	x, _ := base64.RawURLEncoding.DecodeString(f.Key.X)
	pub := ed25519.PublicKey(x)
	if got := sdk.Ed25519KeyID(pub); got != f.Key.Kid {
		t.Fatalf("Ed25519KeyID = %s, want %s", got, f.Key.Kid)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "OKP", "crv": "Ed25519", "x": f.Key.X, "kid": f.Key.Kid}}})
	keys, err := sdk.ParseKeySet(jwks)
	if err != nil || keys.Len() != 1 {
		t.Fatalf("ParseKeySet() = %d keys, %v", keys.Len(), err)
	}
	wantErr := []error{nil, nil, nil, sdk.ErrReceiptHash, sdk.ErrReceiptSignature}
	var prev *sdk.Receipt
	for i, e := range f.Receipts {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			r, err := sdk.ParseReceipt(e.Receipt)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Verify(keys)
			if (err == nil) != e.Valid || !errors.Is(err, wantErr[i]) {
				t.Errorf("Verify(%s) = %v, want valid=%v (%v)", e.Note, err, e.Valid, wantErr[i])
			}
			if e.Valid {
				if prev != nil && (r.PrevHash == nil || *r.PrevHash != prev.Hash || r.Seq != prev.Seq+1) {
					t.Errorf("receipt seq %d prev_hash does not link to seq %d", r.Seq, prev.Seq)
				}
				prev = r
			}
		})
	}
	// A key set without the key: unknown key id.
	r, _ := sdk.ParseReceipt(f.Receipts[0].Receipt)
	if err := r.Verify(sdk.KeySet{}); !errors.Is(err, sdk.ErrReceiptUnknownKey) {
		t.Errorf("Verify(empty keys) = %v, want ErrReceiptUnknownKey", err)
	}
	// Duplicate members are refused, even if the hash would match.
	dup := strings.Replace(string(f.Receipts[0].Receipt), `"seq": 1,`, `"seq": 1, "seq": 1,`, 1)
	r, _ = sdk.ParseReceipt([]byte(dup))
	if err := r.Verify(keys); !errors.Is(err, sdk.ErrReceiptMalformed) {
		t.Errorf("Verify(duplicate member) = %v, want ErrReceiptMalformed", err)
	}
	// A key set whose kid is not the key's thumbprint is refused.
	bad, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "OKP", "crv": "Ed25519", "x": f.Key.X, "kid": "other"}}})
	if _, err := sdk.ParseKeySet(bad); err == nil {
		t.Error("ParseKeySet(kid mismatch) error = nil, want refusal")
	}
	// NewKeySet from the raw key agrees.
	r, _ = sdk.ParseReceipt(f.Receipts[0].Receipt)
	if err := r.Verify(sdk.NewKeySet(pub)); err != nil {
		t.Errorf("Verify(NewKeySet(vector key)) = %v, want nil", err)
	}
}

func TestRequestHashMatchesReceipt(t *testing.T) {
	var f receiptVectorFile
	loadVectors(t, "receipts/receipts.json", &f)
	r, _ := sdk.ParseReceipt(f.Receipts[0].Receipt)
	got, err := sdk.RequestHash(map[string]any{"message": "hello"})
	if err != nil || got != r.RequestHash {
		t.Errorf("RequestHash({message: hello}) = %s, %v, want %s", got, err, r.RequestHash)
	}
}

// TestImportBoundaries enforces STYLE rule 5: the SDK imports nothing from
// the gate's module and no third-party module except gowebpki/jcs.
func TestImportBoundaries(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first := strings.SplitN(path, "/", 2)[0]
			if strings.Contains(first, ".") && path != "github.com/gowebpki/jcs" {
				t.Errorf("%s imports %s; the SDK may import only the standard library and github.com/gowebpki/jcs", name, path)
			}
		}
	}
}
