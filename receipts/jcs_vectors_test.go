package receipts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// HashJSON (request_hash, response_hash) must agree with the shared JCS
// vectors every SDK tests against.
func TestHashJSONGoldenVectors(t *testing.T) {
	b, err := os.ReadFile("../definitions/test_vectors/jcs/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Cases []struct {
			Name, Input, Canonical, SHA256 string
		}
		Invalid []struct{ Name, Input string }
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 || len(v.Invalid) == 0 {
		t.Fatal("empty golden vectors")
	}
	for _, c := range v.Cases {
		got, err := HashJSON([]byte(c.Input))
		if err != nil {
			t.Errorf("HashJSON(%s) error %v", c.Name, err)
			continue
		}
		sum := sha256.Sum256([]byte(c.Canonical))
		if want := "sha256:" + hex.EncodeToString(sum[:]); got != want || got != c.SHA256 {
			t.Errorf("HashJSON(%s) = %s, want %s (vector %s)", c.Name, got, want, c.SHA256)
		}
	}
	for _, c := range v.Invalid {
		if got, err := HashJSON([]byte(c.Input)); err == nil {
			t.Errorf("HashJSON(invalid %s) = %s, want an error", c.Name, got)
		}
	}
}
