package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// errDuplicateMember reports a JSON object with two members of the same name
// (compared after unescaping), at any depth.
var errDuplicateMember = errors.New("duplicate member name")

// maxJSONDepth bounds nesting in strictly decoded JSON.
const maxJSONDepth = 32

// decodeStrict decodes exactly one JSON value from data (whitespace around it
// is allowed, anything else after it is not). Numbers stay json.Number.
// Invalid UTF-8, nesting deeper than maxJSONDepth and duplicate member names at
// any depth are refused; the latter with an error wrapping errDuplicateMember.
//
// Text that json.Valid accepts is walked by a strictWalker; anything else is
// refused by decodeStrictTokens, which reads in order and so reports a
// duplicate member that comes before the syntax error as a duplicate.
func decodeStrict(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	if !json.Valid(data) {
		return decodeStrictTokens(data)
	}
	w := strictWalker{s: string(data)}
	return w.value(0)
}

// strictMember is the value of a top-level member as decodeStrictMembers
// reports it.
type strictMember struct {
	// kind is 0 for an absent member, '"' for a string, '0' for a number,
	// and '{', '[', 't', 'f' or 'n' for an object, array, true, false or
	// null.
	kind byte
	text string // a string's value (unescaped) or a number as written
}

// errNotObject refuses JSON text that is not an object where one is needed.
var errNotObject = errors.New("not a JSON object")

// strictPick asks decodeStrictMembers for the member called name.
type strictPick struct {
	name string
	dst  *strictMember // where the member's value goes
}

// decodeStrictMembers reads a JSON object from data as strictly as
// decodeStrict (same refusals, found in the same order; then errNotObject
// if the value is not an object) but builds nothing: it only stores the
// values of the members named in picks.
func decodeStrictMembers(data []byte, picks []strictPick) error {
	if !utf8.Valid(data) {
		return errors.New("invalid UTF-8")
	}
	if !json.Valid(data) {
		v, err := decodeStrictTokens(data)
		if err != nil {
			return err
		}
		return pickMembers(v, picks)
	}
	w := strictWalker{s: string(data)}
	return w.members(picks)
}

// pickOf returns where the member called name goes, or nil.
func pickOf(picks []strictPick, name string) *strictMember {
	for _, p := range picks {
		if p.name == name {
			return p.dst
		}
	}
	return nil
}

// pickMembers is decodeStrictMembers for a value decodeStrict returned.
func pickMembers(v any, picks []strictPick) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return errNotObject
	}
	for name, v := range obj {
		m := pickOf(picks, name)
		if m == nil {
			continue
		}
		switch v := v.(type) {
		case string:
			*m = strictMember{kind: '"', text: v}
		case json.Number:
			*m = strictMember{kind: '0', text: string(v)}
		case map[string]any:
			*m = strictMember{kind: '{'}
		case []any:
			*m = strictMember{kind: '['}
		case bool:
			*m = strictMember{kind: 'f'}
			if v {
				m.kind = 't'
			}
		case nil:
			*m = strictMember{kind: 'n'}
		}
	}
	return nil
}

// strictWalker builds the value of JSON text that json.Valid accepted and
// that is valid UTF-8, refusing duplicate member names and nesting deeper
// than maxJSONDepth in the order decodeStrictTokens meets them. Strings
// without escapes are substrings of s; numbers are json.Number.
type strictWalker struct {
	s string
	i int // next byte to read
}

// value reads the value at w.i, nested depth levels deep.
func (w *strictWalker) value(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	w.space()
	switch w.s[w.i] {
	case '{':
		w.i++
		obj := map[string]any{}
		if w.space(); w.s[w.i] == '}' {
			w.i++
			return obj, nil
		}
		for {
			w.space()
			key := w.str()
			if _, dup := obj[key]; dup {
				return nil, fmt.Errorf("%w: %q", errDuplicateMember, key)
			}
			w.space()
			w.i++ // ':'
			v, err := w.value(depth + 1)
			if err != nil {
				return nil, err
			}
			obj[key] = v
			if w.end('}') {
				return obj, nil
			}
		}
	case '[':
		w.i++
		arr := []any{}
		if w.space(); w.s[w.i] == ']' {
			w.i++
			return arr, nil
		}
		for {
			v, err := w.value(depth + 1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
			if w.end(']') {
				return arr, nil
			}
		}
	case '"':
		return w.str(), nil
	case 't':
		w.i += len("true")
		return true, nil
	case 'f':
		w.i += len("false")
		return false, nil
	case 'n':
		w.i += len("null")
		return nil, nil
	default:
		return json.Number(w.number()), nil
	}
}

// members reads the value at w.i for decodeStrictMembers.
func (w *strictWalker) members(picks []strictPick) error {
	if w.space(); w.s[w.i] != '{' {
		if err := w.skip(0); err != nil {
			return err
		}
		return errNotObject
	}
	w.i++
	if w.space(); w.s[w.i] == '}' {
		return nil
	}
	var seen memberNames
	for {
		w.space()
		name := w.str()
		if !seen.add(name) {
			return fmt.Errorf("%w: %q", errDuplicateMember, name)
		}
		w.space()
		w.i++ // ':'
		var err error
		if m := pickOf(picks, name); m != nil {
			err = w.member(m)
		} else {
			err = w.skip(1)
		}
		if err != nil {
			return err
		}
		if w.end('}') {
			return nil
		}
	}
}

// member reads the value of a top-level member into m.
func (w *strictWalker) member(m *strictMember) error {
	w.space()
	switch c := w.s[w.i]; c {
	case '"':
		*m = strictMember{kind: '"', text: w.str()}
		return nil
	case '{', '[', 't', 'f', 'n':
		*m = strictMember{kind: c}
		return w.skip(1)
	default:
		*m = strictMember{kind: '0', text: w.number()}
		return nil
	}
}

// skip reads the value at w.i, nested depth levels deep, as value does
// (same refusals in the same order) without building it.
func (w *strictWalker) skip(depth int) error {
	if depth > maxJSONDepth {
		return errors.New("JSON nested too deeply")
	}
	w.space()
	switch w.s[w.i] {
	case '{':
		w.i++
		if w.space(); w.s[w.i] == '}' {
			w.i++
			return nil
		}
		var seen memberNames
		for {
			w.space()
			name := w.str()
			if !seen.add(name) {
				return fmt.Errorf("%w: %q", errDuplicateMember, name)
			}
			w.space()
			w.i++ // ':'
			if err := w.skip(depth + 1); err != nil {
				return err
			}
			if w.end('}') {
				return nil
			}
		}
	case '[':
		w.i++
		if w.space(); w.s[w.i] == ']' {
			w.i++
			return nil
		}
		for {
			if err := w.skip(depth + 1); err != nil {
				return err
			}
			if w.end(']') {
				return nil
			}
		}
	case '"':
		for w.i++; w.s[w.i] != '"'; w.i++ {
			if w.s[w.i] == '\\' {
				w.i++ // the escaped byte cannot end the string
			}
		}
		w.i++
	case 't':
		w.i += len("true")
	case 'f':
		w.i += len("false")
	case 'n':
		w.i += len("null")
	default:
		w.number()
	}
	return nil
}

// number reads the number at w.i and returns its text.
func (w *strictWalker) number() string {
	start := w.i
	for w.i < len(w.s) && strings.IndexByte("0123456789+-.eE", w.s[w.i]) >= 0 {
		w.i++
	}
	return w.s[start:w.i]
}

// end reads the ',' or closing delim after a member or element and reports
// whether it was closing.
func (w *strictWalker) end(closing byte) bool {
	w.space()
	c := w.s[w.i]
	w.i++
	return c == closing
}

// space skips JSON whitespace.
func (w *strictWalker) space() {
	for w.i < len(w.s) {
		switch w.s[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// str reads the string literal at w.i and returns its value. One without
// escapes is a substring of w.s.
func (w *strictWalker) str() string {
	start := w.i
	w.i++ // opening quote
	escaped := false
	for {
		switch w.s[w.i] {
		case '"':
			w.i++
			if !escaped {
				return w.s[start+1 : w.i-1]
			}
			return unquote(w.s[start+1 : w.i-1])
		case '\\':
			escaped = true
			w.i += 2 // a '"' after the backslash does not end the string
		default:
			w.i++
		}
	}
}

// unquote returns the value of the escaped contents of a string literal that
// json.Valid accepted, as encoding/json unquotes it: a \u escape of a
// surrogate that is not the first half of a pair with the next \u escape
// becomes U+FFFD.
func unquote(lit string) string {
	b := make([]byte, 0, len(lit))
	for i := 0; i < len(lit); {
		if lit[i] != '\\' {
			b = append(b, lit[i])
			i++
			continue
		}
		switch c := lit[i+1]; c {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(lit[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if strings.HasPrefix(lit[i:], `\u`) {
					r2 = hex4(lit[i+2:])
				}
				if pair := utf16.DecodeRune(r, r2); pair != unicode.ReplacementChar {
					r = pair
					i += 6
				} else {
					r = unicode.ReplacementChar
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default: // '"', '\\', '/'
			b = append(b, c)
		}
		i += 2
	}
	return string(b)
}

// hex4 returns the value of the four hex digits s starts with.
func hex4(s string) rune {
	var r rune
	for _, c := range []byte(s[:4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// memberNames is the set of member names of one object read so far. It
// starts in an array and moves to a map past len(few) names, so an object
// with many members costs no more than a map.
type memberNames struct {
	few  [8]string
	n    int
	many map[string]struct{} // every name, once there are more than len(few)
}

// add adds name and reports whether it was new.
func (s *memberNames) add(name string) bool {
	if s.many == nil {
		for _, f := range s.few[:s.n] {
			if f == name {
				return false
			}
		}
		if s.n < len(s.few) {
			s.few[s.n] = name
			s.n++
			return true
		}
		s.many = make(map[string]struct{}, 4*len(s.few))
		for _, f := range s.few {
			s.many[f] = struct{}{}
		}
	}
	if _, dup := s.many[name]; dup {
		return false
	}
	s.many[name] = struct{}{}
	return true
}

// decodeStrictTokens is decodeStrict built on json.Decoder.Token. It reads
// the text in order and stops at the first problem, whatever it is; it is
// decodeStrict's reference and handles the text json.Valid refuses.
func decodeStrictTokens(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := strictValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// strictValue reads one value from dec.
func strictValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("bad JSON: %w", err)
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errors.New("bad JSON: member name is not a string")
				}
				if _, dup := obj[key]; dup {
					return nil, fmt.Errorf("%w: %q", errDuplicateMember, key)
				}
				v, err := strictValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				obj[key] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("bad JSON: %w", err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := strictValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("bad JSON: %w", err)
			}
			return arr, nil
		}
		return nil, errors.New("bad JSON: unexpected delimiter")
	default:
		return t, nil
	}
}
