package receipts

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
)

// encoders are the canonical encoders under test, by the type they encode.
var encoders = map[reflect.Type]func(v any) ([]byte, error){
	reflect.TypeFor[Receipt]():     func(v any) ([]byte, error) { return appendReceipt(nil, v.(*Receipt)) },
	reflect.TypeFor[Intent]():      func(v any) ([]byte, error) { return appendIntent(nil, v.(*Intent)) },
	reflect.TypeFor[AuditRecord](): func(v any) ([]byte, error) { return appendAudit(nil, v.(*AuditRecord)) },
	reflect.TypeFor[abortRecord](): func(v any) ([]byte, error) { return appendAbort(nil, v.(*abortRecord)) },
	reflect.TypeFor[Head]():        func(v any) ([]byte, error) { return appendHead(nil, v.(*Head)) },
}

// wantCanonical is what an encoder must produce: the JCS form of
// json.Marshal(v), the path the ledger took before the encoders.
func wantCanonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return canonicalJSON(b)
}

// Strings that exercise every escaping rule: JSON's and JCS's differ on
// HTML characters, U+2028/9 and control characters, and json.Marshal
// replaces invalid UTF-8.
var encodeStrings = []string{
	"", "a", "sha256:0123abcd", "2026-11-23T05:22:19.123Z", `q"uote`, `back\slash`, "slash/",
	"<script>&amp;", "line\nbreak\ttab\rret\bbs\ffeed", "\x00\x01\x1f\x7f", "é ü ß", "日本語", "😀 emoji",
	"\u2028\u2029", "\xff", "a\xc3", "\xed\xa0\x80", "\xef\xbf\xbd", "mixed \"é\"\n\xfe end",
}

var encodeRaws = []json.RawMessage{
	nil, json.RawMessage("null"), json.RawMessage(`{"b":1,"a":[true,false,null],"c":{"z":"\u00e9","y":"\u003c"}}`),
	json.RawMessage(` [ 1 , 2.50 , 1e3 , -0 , 123456789012345678 ] `), json.RawMessage(`"\ud83d\ude00"`),
	json.RawMessage(`{"a":1,"a":2}`), json.RawMessage(`{`), json.RawMessage(``), json.RawMessage(`{"é":1,"e":2}`),
}

var encodeInts = []int64{0, 1, -1, 42, 999_999_999_999_999, -999_999_999_999_999, 1_000_000_000_000_000, 1 << 53, 1<<53 + 1, 1 << 62, -(1 << 63)}

// fillRandom sets every field of the struct v points to from r, recursively:
// strings, integers, bools, pointers (nil or set), slices (nil, empty or
// filled) and raw JSON from the tables above.
func fillRandom(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(encodeStrings[r.IntN(len(encodeStrings))])
	case reflect.Int64:
		v.SetInt(encodeInts[r.IntN(len(encodeInts))])
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Pointer:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fillRandom(r, p.Elem())
		v.Set(p)
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() {
			v.Set(reflect.ValueOf(encodeRaws[r.IntN(len(encodeRaws))]))
			return
		}
		switch n := r.IntN(4); n {
		case 0:
			v.SetZero()
		default:
			s := reflect.MakeSlice(v.Type(), n-1, n-1)
			for i := range n - 1 {
				fillRandom(r, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() { // unexported: the ledger's own marks
				fillRandom(r, v.Field(i))
			}
		}
	default:
		panic("fill: no rule for " + v.Type().String())
	}
}

// TestCanonicalEncodingMatchesMarshal: each encoder writes exactly the JCS
// form of json.Marshal, for values with every field set in every way, and
// fails exactly where that fails (integers beyond 2^53, invalid embedded
// JSON). A field added to a record type and not to its encoder fails here.
func TestCanonicalEncodingMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 23))
	for typ, enc := range encoders {
		t.Run(typ.Name(), func(t *testing.T) {
			for i := range 3000 {
				p := reflect.New(typ)
				if i > 0 { // the first value is the zero value
					fillRandom(r, p.Elem())
				}
				v := p.Interface()
				want, wantErr := wantCanonical(v)
				got, err := enc(v)
				if (err != nil) != (wantErr != nil) {
					t.Fatalf("%+v:\nencoder error %v, json.Marshal+JCS error %v", v, err, wantErr)
				}
				if err == nil && !bytes.Equal(got, want) {
					t.Fatalf("%+v:\n got %s\nwant %s", v, got, want)
				}
			}
		})
	}
}

// FuzzCanonicalEncoding holds the receipt encoder to json.Marshal + JCS
// for arbitrary strings and embedded output.
func FuzzCanonicalEncoding(f *testing.F) {
	for _, s := range encodeStrings {
		f.Add(s, []byte(`{"x":"`+s+`"}`), int64(len(s)))
	}
	f.Add("", []byte(`[1,2.5,"\u2028"]`), int64(1<<53+1))
	f.Fuzz(func(t *testing.T, s string, out []byte, n int64) {
		rc := &Receipt{ReceiptID: s, Principal: s + "x", Output: out, Seq: n, Egress: Egress{Hosts: []string{s}},
			Approval: &Approval{Kind: s}, Peer: &Peer{UID: n, PID: -n}}
		want, wantErr := wantCanonical(rc)
		got, err := appendReceipt(nil, rc)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("encoder error %v, json.Marshal+JCS error %v", err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkEncodeReceipt compares the receipt's canonical encoding with
// the json.Marshal + JCS pass it replaced.
func BenchmarkEncodeReceipt(b *testing.B) {
	r := sampleReceipt(1)
	r.Seq = 1
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = appendReceipt(buf[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal+jcs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := wantCanonical(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
