package lease

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	cases := []struct {
		name, in string
		dup, ok  bool
	}{
		{"ok/object", `{"a":1,"b":{"c":[1,{"d":2}]}}`, false, true},
		{"ok/same_name_other_objects", `{"a":{"x":1},"b":{"x":2}}`, false, true},
		{"ok/whitespace", " {\"a\":1} \n", false, true},
		{"dup/top", `{"a":1,"a":1}`, true, false},
		{"dup/escaped", `{"a":1,"\u0061":2}`, true, false},
		{"dup/nested", `{"a":{"b":1,"b":2}}`, true, false},
		{"dup/in_array", `{"a":[{"b":1,"b":2}]}`, true, false},
		{"bad/trailing", `{"a":1}{"a":2}`, false, false},
		{"bad/trailing_comma", `{"a":1,}`, false, false},
		{"bad/invalid_utf8", "{\"a\":\"\xc3\x28\"}", false, false},
		{"bad/too_deep", strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2), false, false},
		{"bad/empty", ``, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(c.in))
			switch {
			case c.ok && err != nil:
				t.Errorf("decodeStrict(%q) = %v, want ok", c.in, err)
			case !c.ok && err == nil:
				t.Errorf("decodeStrict(%q) = nil error, want an error", c.in)
			case errors.Is(err, errDuplicateMember) != c.dup:
				t.Errorf("decodeStrict(%q) = %v, want duplicate=%v", c.in, err, c.dup)
			}
		})
	}
}
