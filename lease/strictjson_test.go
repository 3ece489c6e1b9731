package lease

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// strictJSONCases are the inputs TestDecodeStrict checks and
// FuzzStrictDecode starts from. dup means the error must wrap
// errDuplicateMember.
var strictJSONCases = []struct {
	name, in string
	dup, ok  bool
}{
	{"ok/object", `{"a":1,"b":{"c":[1,{"d":2}]}}`, false, true},
	{"ok/same_name_other_objects", `{"a":{"x":1},"b":{"x":2}}`, false, true},
	{"ok/whitespace", " {\"a\":1} \n", false, true},
	{"ok/all_whitespace", "\t\r\n {\t\"a\"\r:\n[ 1 ,\t2 ] , \"b\" : { } }\r\n", false, true},
	{"ok/scalars", `{"t":true,"f":false,"n":null,"s":"","a":[],"o":{}}`, false, true},
	{"ok/top_level_string", `"x"`, false, true},
	{"ok/top_level_number", ` -1.5e+3 `, false, true},
	{"ok/top_level_null", `null`, false, true},
	{"ok/big_number", `{"n":123456789012345678901234567890}`, false, true},
	{"ok/minus_zero", `{"n":-0}`, false, true},
	{"ok/huge_exponent", `{"n":1e400}`, false, true},
	{"ok/escapes", `{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}`, false, true},
	{"ok/escaped_quote_in_key", `{"a\"b":1,"a":2,"b":3}`, false, true},
	{"ok/lone_surrogate", `{"s":"\ud800"}`, false, true},
	{"ok/non_ascii_key", `{"é":1,"e":2}`, false, true},
	{"ok/unicode_escape_differs", `{"é":1,"\u00e8":2}`, false, true},
	{"ok/null_member_then_other", `{"a":null,"b":null}`, false, true},
	{"ok/nine_members", `{"m0":0,"m1":0,"m2":0,"m3":0,"m4":0,"m5":0,"m6":0,"m7":0,"m8":0}`, false, true},
	{"ok/max_depth_scalar", strings.Repeat("[", maxJSONDepth) + "1" + strings.Repeat("]", maxJSONDepth), false, true},
	{"ok/max_depth_empty", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), false, true},
	{"ok/max_depth_objects", strings.Repeat(`{"a":`, maxJSONDepth) + "{}" + strings.Repeat("}", maxJSONDepth), false, true},
	{"dup/top", `{"a":1,"a":1}`, true, false},
	{"dup/escaped", `{"a":1,"\u0061":2}`, true, false},
	{"dup/escaped_both", `{"\u0061":1,"\u0061":2}`, true, false},
	{"dup/escaped_solidus", `{"a/b":1,"a\/b":2}`, true, false},
	{"dup/escaped_non_ascii", `{"é":1,"\u00e9":2}`, true, false},
	{"dup/lone_surrogates", `{"\ud800":1,"\udfff":2}`, true, false},
	{"dup/lone_surrogate_and_replacement", `{"\ud800":1,"` + "\uFFFD" + `":2}`, true, false},
	{"dup/null_values", `{"a":null,"a":null}`, true, false},
	{"dup/after_eight_members", `{"m0":0,"m1":0,"m2":0,"m3":0,"m4":0,"m5":0,"m6":0,"m7":0,"m8":0,"m2":0}`, true, false},
	{"dup/nested", `{"a":{"b":1,"b":2}}`, true, false},
	{"dup/in_array", `{"a":[{"b":1,"b":2}]}`, true, false},
	{"dup/deep", strings.Repeat(`{"a":`, 10) + `{"b":1,"b":2}` + strings.Repeat("}", 10), true, false},
	{"dup/top_level_array", `[{"b":1,"b":2}]`, true, false},
	{"dup/before_syntax_error", `{"a":1,"a":2,}`, true, false},
	{"dup/before_truncation", `{"a":1,"a"`, true, false},
	{"dup/before_missing_colon", `{"a":1,"a"}`, true, false},
	{"dup/before_trailing_garbage", `{"a":1,"a":2} x`, true, false},
	{"dup/before_invalid_escape", `{"a":1,"a":"\x"}`, true, false},
	{"dup/before_too_deep", `{"a":1,"a":` + strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2) + `}`, true, false},
	{"bad/too_deep_before_dup", `{"x":` + strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2) + `,"a":1,"a":2}`, false, false},
	{"bad/syntax_before_dup", `{"x":tru,"a":1,"a":2}`, false, false},
	{"bad/trailing", `{"a":1}{"a":2}`, false, false},
	{"bad/trailing_garbage", `{"a":1} x`, false, false},
	{"bad/trailing_comma", `{"a":1,}`, false, false},
	{"bad/trailing_comma_array", `[1,]`, false, false},
	{"bad/missing_comma", `{"a":1 "b":2}`, false, false},
	{"bad/invalid_utf8", "{\"a\":\"\xc3\x28\"}", false, false},
	{"bad/invalid_utf8_key", "{\"\xff\":1}", false, false},
	{"bad/invalid_utf8_outside_strings", "{\"a\":1}\xff", false, false},
	{"bad/bom", "\xef\xbb\xbf{}", false, false},
	{"bad/too_deep", strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2), false, false},
	{"bad/too_deep_scalar", strings.Repeat("[", maxJSONDepth+1) + "1" + strings.Repeat("]", maxJSONDepth+1), false, false},
	{"bad/very_deep", strings.Repeat("[", 20000), false, false},
	{"bad/empty", ``, false, false},
	{"bad/only_space", ` `, false, false},
	{"bad/single_quotes", `{'a':1}`, false, false},
	{"bad/unquoted_key", `{a:1}`, false, false},
	{"bad/control_char_in_string", "{\"a\":\"\x01\"}", false, false},
	{"bad/bad_escape", `{"a":"\x"}`, false, false},
	{"bad/short_unicode_escape", `{"a":"\u12"}`, false, false},
	{"bad/leading_zero", `{"a":01}`, false, false},
	{"bad/plus_number", `{"a":+1}`, false, false},
	{"bad/nan", `{"a":NaN}`, false, false},
	{"bad/bare_dot", `{"a":1.}`, false, false},
	{"bad/true_prefix", `{"a":tru}`, false, false},
	{"bad/comment", `{"a":1/*x*/}`, false, false},
	{"bad/nul", "{\"a\":1}\x00", false, false},
}

func TestDecodeStrict(t *testing.T) {
	for _, c := range strictJSONCases {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range []struct {
				name   string
				decode func([]byte) (any, error)
			}{{"decodeStrict", decodeStrict}, {"decodeStrictTokens", decodeStrictTokens}} {
				_, err := f.decode([]byte(c.in))
				switch {
				case c.ok && err != nil:
					t.Errorf("%s(%q) = %v, want ok", f.name, c.in, err)
				case !c.ok && err == nil:
					t.Errorf("%s(%q) = nil error, want an error", f.name, c.in)
				case errors.Is(err, errDuplicateMember) != c.dup:
					t.Errorf("%s(%q) = %v, want duplicate=%v", f.name, c.in, err, c.dup)
				}
			}
		})
	}
}

// TestDecodeStrictValues checks the decoded values: exact numbers, unescaped
// strings (a lone surrogate becomes U+FFFD) and empty, non-nil containers.
func TestDecodeStrictValues(t *testing.T) {
	cases := []struct {
		in   string
		want any
	}{
		{`{"n":123456789012345678901234567890}`, map[string]any{"n": json.Number("123456789012345678901234567890")}},
		{`{"n":-0}`, map[string]any{"n": json.Number("-0")}},
		{`{"n":1e400}`, map[string]any{"n": json.Number("1e400")}},
		{`{"n":-1.50E-007}`, map[string]any{"n": json.Number("-1.50E-007")}},
		{`{"\u0061":"\ud800x\ud83d\ude00"}`, map[string]any{"a": "\uFFFDx\U0001F600"}},
		{`{"a\"b":"c\\"}`, map[string]any{`a"b`: `c\`}},
		{`[true,false,null,[],{}]`, []any{true, false, nil, []any{}, map[string]any{}}},
		{` "s" `, "s"},
	}
	for _, c := range cases {
		got, err := decodeStrict([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("decodeStrict(%q) = %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}
}

// fuzzPickNames are the members FuzzStrictDecode and TestDecodeStrictMembers
// pick.
var fuzzPickNames = [...]string{"a", "b", "jti", "iat", "", "é"}

// picked holds the members of fuzzPickNames, in that order.
type picked [len(fuzzPickNames)]strictMember

// picksFor picks fuzzPickNames into dst.
func picksFor(dst *picked) []strictPick {
	picks := make([]strictPick, len(fuzzPickNames))
	for i, n := range fuzzPickNames {
		picks[i] = strictPick{n, &dst[i]}
	}
	return picks
}

func TestDecodeStrictMembers(t *testing.T) {
	m := func(kind byte, text string) strictMember { return strictMember{kind: kind, text: text} }
	errAny := errors.New("any error but a duplicate")
	cases := []struct {
		name, in string
		want     picked // a, b, jti, iat, "", é
		err      error  // nil, errDuplicateMember, errNotObject or errAny
	}{
		{"kinds", `{"a":"x","b":-1.5e3,"jti":{"k":[1]},"iat":[],"":true,"é":null}`,
			picked{m('"', "x"), m('0', "-1.5e3"), m('{', ""), m('[', ""), m('t', ""), m('n', "")}, nil},
		{"escaped_names_and_values", `{"\u0061":"\u0078\ud800","j\u0074i":false,"\u00e9":0}`,
			picked{0: m('"', "x\uFFFD"), 2: m('f', ""), 5: m('0', "0")}, nil},
		{"unpicked_members_skipped", `{"z":{"y":[{"x":"\"}"}]},"a":1}`, picked{0: m('0', "1")}, nil},
		{"many_members", `{"m0":0,"m1":0,"m2":0,"m3":0,"m4":0,"m5":0,"m6":0,"m7":0,"m8":0,"m9":0,"b":"ok"}`,
			picked{1: m('"', "ok")}, nil},
		{"empty", `{}`, picked{}, nil},
		{"dup_top", `{"a":1,"\u0061":2}`, picked{}, errDuplicateMember},
		{"dup_top_after_eight", `{"m0":0,"m1":0,"m2":0,"m3":0,"m4":0,"m5":0,"m6":0,"m7":0,"m8":0,"m1":0}`, picked{}, errDuplicateMember},
		{"dup_in_unpicked", `{"z":{"y":1,"y":2}}`, picked{}, errDuplicateMember},
		{"dup_in_picked", `{"a":{"y":1,"y":2}}`, picked{}, errDuplicateMember},
		{"dup_deep_in_array", `{"a":[[{"y":1,"\u0079":2}]]}`, picked{}, errDuplicateMember},
		{"dup_in_non_object", `[{"y":1,"y":2}]`, picked{}, errDuplicateMember},
		{"dup_before_syntax_error", `{"a":1,"a":2,}`, picked{}, errDuplicateMember},
		{"not_object", `[1]`, picked{}, errNotObject},
		{"not_object_string", `"a"`, picked{}, errNotObject},
		{"too_deep", `{"a":` + strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1) + `}`, picked{}, errAny},
		{"trailing", `{"a":1}x`, picked{}, errAny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got picked
			err := decodeStrictMembers([]byte(c.in), picksFor(&got))
			switch {
			case c.err == nil && err != nil:
				t.Fatalf("decodeStrictMembers(%q) = %v, want ok", c.in, err)
			case c.err != nil && err == nil:
				t.Fatalf("decodeStrictMembers(%q) = nil, want %v", c.in, c.err)
			case errors.Is(err, errDuplicateMember) != (c.err == errDuplicateMember),
				c.err == errNotObject && err != errNotObject:
				t.Fatalf("decodeStrictMembers(%q) = %v, want %v", c.in, err, c.err)
			case c.err == nil && got != c.want:
				t.Fatalf("decodeStrictMembers(%q) = %+v, want %+v", c.in, got, c.want)
			}
		})
	}
}

// FuzzStrictDecode checks decodeStrict against decodeStrictTokens, the
// json.Decoder.Token reader it replaces: same accept or refuse, same
// duplicate-member classification, same value. It checks
// decodeStrictMembers the same way, against decodeStrictTokens then
// pickMembers.
func FuzzStrictDecode(f *testing.F) {
	for _, c := range strictJSONCases {
		f.Add([]byte(c.in))
	}
	header, payload := benchProofJSON(f)
	f.Add(header)
	f.Add(payload)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeStrict(data)
		want, wantErr := decodeStrictTokens(data)
		switch {
		case (err == nil) != (wantErr == nil):
			t.Fatalf("decodeStrict(%q) = %v, want %v", data, err, wantErr)
		case errors.Is(err, errDuplicateMember) != errors.Is(wantErr, errDuplicateMember):
			t.Fatalf("decodeStrict(%q) = %v, want %v", data, err, wantErr)
		case !reflect.DeepEqual(got, want):
			t.Fatalf("decodeStrict(%q) = %#v, want %#v", data, got, want)
		}

		var gotM, wantM picked
		err = decodeStrictMembers(data, picksFor(&gotM))
		if wantErr == nil {
			wantErr = pickMembers(want, picksFor(&wantM))
		}
		switch {
		case (err == nil) != (wantErr == nil):
			t.Fatalf("decodeStrictMembers(%q) = %v, want %v", data, err, wantErr)
		case errors.Is(err, errDuplicateMember) != errors.Is(wantErr, errDuplicateMember):
			t.Fatalf("decodeStrictMembers(%q) = %v, want %v", data, err, wantErr)
		case err == nil && gotM != wantM:
			t.Fatalf("decodeStrictMembers(%q) = %+v, want %+v", data, gotM, wantM)
		}
	})
}

// TestUnquote checks unquote against encoding/json on escapes, surrogate
// pairs and lone or misordered surrogates.
func TestUnquote(t *testing.T) {
	for _, lit := range []string{
		`"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u0000\u001f\u0041\u00e9\u4e2d"`,
		`"\ud83d\ude00"`, `"\uD83D\uDE00"`, `"\ude00\ud83d"`, `"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`,
		`"\ud83dx"`, `"x\ud83d"`, `"\udfff"`, `"\ud800\\u0041"`, `"\ud800\\"`, `"é\u00e9😀\ufffd"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatalf("json.Unmarshal(%s) = %v", lit, err)
		}
		if got := unquote(lit[1 : len(lit)-1]); got != want {
			t.Errorf("unquote(%s) = %q, want %q", lit, got, want)
		}
	}
}
