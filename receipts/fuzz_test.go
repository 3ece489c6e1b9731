package receipts_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/receipts"
)

// FuzzHashJSON feeds arbitrary bytes to the JCS hash: it never panics,
// refuses what is not JSON, and gives one hash per value, however the
// value was spelled (whitespace and member order do not matter).
func FuzzHashJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"b":1,"a":[1,2.5,"x"]}`, `{"a":1,"a":2}`, `9007199254740993`, `1e400`, `NaN`,
		"\xef\xbb\xbf{}", `"\ud800"`, "\"\xff\"", `[` + strings.Repeat("[", 10000), `{"a":-0}`, `1E+2`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := receipts.HashJSON(raw)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("HashJSON(%q) hashed invalid JSON", raw)
		}
		if len(h) != len("sha256:")+64 || !strings.HasPrefix(h, "sha256:") {
			t.Fatalf("HashJSON(%q) = %q, not sha256:<hex>", raw, h)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return
		}
		re, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return
		}
		// Re-encoding through float64 may change a number that is not
		// exactly a double; compare only when the value survived.
		var w any
		if json.Unmarshal(re, &w) != nil {
			return
		}
		if h2, err := receipts.HashJSON(re); err == nil && h2 != h && !hasNumber(raw) {
			t.Fatalf("HashJSON differs for the same value: %q → %s, %q → %s", raw, h, re, h2)
		}
	})
}

// hasNumber reports whether raw may contain a JSON number (whose spelling
// JCS normalises but float64 round trips may not preserve).
func hasNumber(raw []byte) bool { return strings.ContainsAny(string(raw), "0123456789") }
