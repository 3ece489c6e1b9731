package actions

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting of arguments and upstream bodies.
const maxJSONDepth = 128

// parseIJSON parses data as one I-JSON (RFC 7493) value and returns it in the
// shape the schema validator expects: map[string]any, []any, string,
// json.Number, bool or nil. It refuses what encoding/json would silently
// accept or alter: invalid UTF-8, lone surrogates, duplicate member names at
// any depth, and numbers that a double cannot hold exactly enough to
// round-trip (see numberExact), so the hash of what was received is the hash
// of what runs.
func parseIJSON(data []byte) (any, error) {
	p := &ijsonParser{data: data}
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.fail("unexpected data after the JSON value")
	}
	return v, nil
}

type ijsonParser struct {
	data []byte
	pos  int
}

func (p *ijsonParser) fail(reason string) *InvalidJSONError {
	return &InvalidJSONError{Offset: int64(p.pos), Reason: reason}
}

func (p *ijsonParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *ijsonParser) value(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, p.fail("nesting deeper than " + strconv.Itoa(maxJSONDepth))
	}
	if p.pos >= len(p.data) {
		return nil, p.fail("unexpected end of input")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		return nil, p.fail("unexpected character")
	}
}

func (p *ijsonParser) literal(lit string) error {
	if !strings.HasPrefix(string(p.data[p.pos:min(len(p.data), p.pos+len(lit))]), lit) {
		return p.fail("invalid literal")
	}
	p.pos += len(lit)
	return nil
}

func (p *ijsonParser) object(depth int) (any, error) {
	p.pos++ // '{'
	obj := map[string]any{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return obj, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.fail("expected a member name")
		}
		at := p.pos
		name, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := obj[name]; dup {
			return nil, &InvalidJSONError{Offset: int64(at), Reason: "duplicate member name"}
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail("expected ':'")
		}
		p.pos++
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		obj[name] = v
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unexpected end of input")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return obj, nil
		default:
			return nil, p.fail("expected ',' or '}'")
		}
	}
}

func (p *ijsonParser) array(depth int) (any, error) {
	p.pos++ // '['
	arr := []any{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return arr, nil
	}
	for {
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unexpected end of input")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return arr, nil
		default:
			return nil, p.fail("expected ',' or ']'")
		}
	}
}

func (p *ijsonParser) str() (string, error) {
	p.pos++ // opening quote
	var sb strings.Builder
	for {
		if p.pos >= len(p.data) {
			return "", p.fail("unterminated string")
		}
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return sb.String(), nil
		case c == '\\':
			if err := p.escape(&sb); err != nil {
				return "", err
			}
		case c < 0x20:
			return "", p.fail("control character in string")
		case c < utf8.RuneSelf:
			sb.WriteByte(c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.fail("invalid UTF-8")
			}
			sb.Write(p.data[p.pos : p.pos+size])
			p.pos += size
		}
	}
}

func (p *ijsonParser) escape(sb *strings.Builder) error {
	if p.pos+1 >= len(p.data) {
		return p.fail("unterminated escape")
	}
	c := p.data[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		sb.WriteByte(c)
	case 'b':
		sb.WriteByte('\b')
	case 'f':
		sb.WriteByte('\f')
	case 'n':
		sb.WriteByte('\n')
	case 'r':
		sb.WriteByte('\r')
	case 't':
		sb.WriteByte('\t')
	case 'u':
		r, ok := p.hex4()
		if !ok {
			return p.fail("invalid \\u escape")
		}
		switch {
		case utf16.IsSurrogate(r) && r < 0xdc00:
			// A high surrogate must be followed by an escaped low one.
			if p.pos+1 >= len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
				return p.fail("lone surrogate")
			}
			p.pos += 2
			r2, ok := p.hex4()
			if !ok {
				return p.fail("invalid \\u escape")
			}
			if r2 < 0xdc00 || r2 > 0xdfff {
				return p.fail("lone surrogate")
			}
			sb.WriteRune(utf16.DecodeRune(r, r2))
		case utf16.IsSurrogate(r):
			return p.fail("lone surrogate")
		default:
			sb.WriteRune(r)
		}
	default:
		return p.fail("invalid escape")
	}
	return nil
}

func (p *ijsonParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.data) {
		return 0, false
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.pos += 4
	return r, true
}

func (p *ijsonParser) number() (any, error) {
	start := p.pos
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return nil, p.fail("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			p.pos = i
			return nil, p.fail("invalid number")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			p.pos = i
			return nil, p.fail("invalid number")
		}
	}
	p.pos = i
	text := string(d[start:i])
	if reason := numberExact(text); reason != "" {
		return nil, &InvalidJSONError{Offset: int64(start), Reason: reason}
	}
	return json.Number(text), nil
}

// numberExact reports why a syntactically valid JSON number is not I-JSON, or
// "" if it is. A number is accepted when its decimal value equals the decimal
// value of the shortest representation of the nearest double — exactly what
// JCS will write when hashing it. So 0.1 and 1.50 pass, while
// 9007199254740993 (which a double turns into ...992), 1e400 (overflow) and
// 1e-400 (underflow to 0) are refused.
func numberExact(text string) string {
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return "number out of range for a double"
	}
	if !decimalEqual(text, strconv.FormatFloat(f, 'g', -1, 64)) {
		return "number cannot be represented exactly as a double"
	}
	return ""
}

// decimalEqual compares two decimal number texts by value.
func decimalEqual(a, b string) bool {
	an, ad, ae, aok := decimalParts(a)
	bn, bd, be, bok := decimalParts(b)
	if !aok || !bok {
		return false
	}
	if ad == "" || bd == "" {
		return ad == bd // zero equals zero whatever its sign
	}
	return an == bn && ad == bd && ae == be
}

// decimalParts splits a number text into sign, significant digits (no leading
// or trailing zeros) and the power of ten of the last digit.
func decimalParts(s string) (neg bool, digits string, exp int, ok bool) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	mant, expText, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	all := strings.TrimLeft(intPart+frac, "0")
	trimmed := strings.TrimRight(all, "0")
	if trimmed == "" {
		return neg, "", 0, true
	}
	if hasExp {
		e, err := strconv.Atoi(expText)
		if err != nil {
			return false, "", 0, false
		}
		exp = e
	}
	exp = exp - len(frac) + (len(all) - len(trimmed))
	return neg, trimmed, exp, true
}
