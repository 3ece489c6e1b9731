package receipts

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

var canonCases = []struct {
	name string
	in   string
}{
	{"ok/object-sorted", `{"b":1,"a":[true,false,null],"c":{"z":"x","y":{}}}`},
	{"ok/whitespace", " \t{ \"a\" : [ 1 , 2 ] ,\n\"b\":\"c\" }\r\n"},
	{"ok/top-scalar", ` 42 `},
	{"ok/escapes", `{"s":"\"\\\/\b\f\n\r\t\u0001\u001f\u007f\u00e9\u2028 <&> \u003c"}`},
	{"ok/utf8", `{"s":"héllo €𝄞"}`},
	{"ok/go-html-escapes", `"\u003cscript\u003e \u0026"`},
	{"ok/empty", `{"a":{},"b":[],"c":""}`},
	{"ok/ints", `[0,-1,123456789012345,-999]`},
	{"fallback/fraction", `[1.5,1e3,1E-7,0.1]`},
	{"fallback/long-int", `[1234567890123456789012]`},
	{"fallback/minus-zero", `[-0]`},
	{"fallback/non-ascii-key", `{"é":1,"z":2,"a":3}`},
	{"fallback/escaped-key", `{"a\"b":1,"a":2}`},
	{"fallback/surrogates", `"\ud834\udd1e"`},
	{"fallback/deep", strings.Repeat("[", 100) + strings.Repeat("]", 100)},
	{"fail/duplicate-key", `{"a":1,"a":2}`},
	{"fail/lone-surrogate", `"\udd1e"`},
	{"fail/invalid-utf8", "\"\xff\""},
	{"fail/control-char", "\"a\x01\""},
	{"fail/trailing", `{} x`},
	{"fail/leading-zero", `[01]`},
	{"fail/bad-literal", `[tru]`},
	{"fail/unterminated", `{"a":1`},
	{"fail/missing-value", `{"a":}`},
	{"fail/trailing-comma", `[1,]`},
	{"fail/empty", ``},
	{"fail/bad-escape", `"\x"`},
	{"fail/short-unicode", `"\u12"`},
}

// TestCanonicalJSONMatchesJCS: canonicalJSON gives exactly jcs.Transform's
// output, and fails exactly where it fails.
func TestCanonicalJSONMatchesJCS(t *testing.T) {
	recs := []string{}
	for i := range 3 {
		b, _ := json.Marshal(sampleReceipt(i))
		recs = append(recs, string(b))
	}
	b, _ := json.Marshal(&AuditRecord{ID: "x", Principal: "p\u2028<>", Decision: DecisionDeny, DenyReasons: []string{"a", "b"}})
	recs = append(recs, string(b))
	for _, tt := range canonCases {
		t.Run(tt.name, func(t *testing.T) { checkCanon(t, []byte(tt.in)) })
	}
	for i, r := range recs {
		t.Run("ok/record-"+string(rune('0'+i)), func(t *testing.T) { checkCanon(t, []byte(r)) })
	}
}

func checkCanon(t *testing.T, in []byte) {
	t.Helper()
	want, wantErr := jcs.Transform(in)
	got, err := canonicalJSON(in)
	if (err != nil) != (wantErr != nil) || string(got) != string(want) {
		t.Errorf("canonicalJSON(%q) = %q, %v; want %q, %v", in, got, err, want, wantErr)
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, tt := range canonCases {
		f.Add([]byte(tt.in))
	}
	b, _ := json.Marshal(sampleReceipt(1))
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) { checkCanon(t, in) })
}

func BenchmarkHashJSON(b *testing.B) {
	r := sampleReceipt(1)
	r.Seq = 1
	raw, _ := json.Marshal(r)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := HashJSON(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHashJSONLibrary(b *testing.B) {
	r := sampleReceipt(1)
	r.Seq = 1
	raw, _ := json.Marshal(r)
	b.ReportAllocs()
	for b.Loop() {
		c, err := jcs.Transform(raw)
		if err != nil {
			b.Fatal(err)
		}
		_ = hashBytes(c)
	}
}
