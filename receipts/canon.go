package receipts

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// canonicalJSON returns the RFC 8785 (JCS) form of raw, exactly as
// jcs.Transform does. A CPU profile of the gate under `latchgate bench`
// showed jcs.Transform at ~9% of the gate's CPU and a quarter of its
// allocations (every receipt and decision record is canonicalised in the
// ledger writer), so the common shape is handled here in one pass with
// reused buffers: ASCII object keys without escapes, integers of at most 15
// digits (exact in a double; ES6 prints them as written) other than -0,
// strings, literals, arrays and objects up to depth 64. Anything else
// (fractions, exponents, long integers, non-ASCII or escaped keys,
// surrogate escapes, duplicate keys, invalid input) goes to jcs.Transform,
// which canonicalises or rejects it as before.
//
// The result is valid until c is used again.
func (c *canon) canonicalJSON(raw []byte) ([]byte, error) {
	c.in, c.i, c.out = raw, 0, c.out[:0]
	defer func() { c.in = nil }()
	if c.value(0) && c.end() {
		return c.out, nil
	}
	return jcs.Transform(raw)
}

// canonicalJSON is (*canon).canonicalJSON with fresh buffers.
func canonicalJSON(raw []byte) ([]byte, error) {
	var c canon
	return c.canonicalJSON(raw)
}

// canonicalClone is canonicalJSON with a pooled canon: the JCS form of raw
// in a slice of its own.
func canonicalClone(raw []byte) ([]byte, error) {
	c := canonPool.Get().(*canon)
	out, err := c.canonicalJSON(raw)
	if err == nil {
		out = bytes.Clone(out)
	}
	if cap(c.out) <= maxPooledBuf && cap(c.scratch) <= maxPooledBuf {
		canonPool.Put(c)
	}
	return out, err
}

const (
	maxCanonDepth = 64
	maxPooledBuf  = 64 << 10 // larger buffers are not kept in the pool
)

// canonPool holds *canon values with their buffers, reused across hashes.
var canonPool = sync.Pool{New: func() any { return new(canon) }}

type canonMember struct{ ks, ke, ve int } // key [ks,ke) and value [ke,ve) in out

type canon struct {
	in      []byte
	i       int
	out     []byte
	scratch []byte
}

func (c *canon) ws() {
	for c.i < len(c.in) {
		switch c.in[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *canon) end() bool {
	c.ws()
	return c.i == len(c.in)
}

func (c *canon) value(depth int) bool {
	if depth > maxCanonDepth {
		return false
	}
	c.ws()
	if c.i >= len(c.in) {
		return false
	}
	switch b := c.in[c.i]; {
	case b == '{':
		return c.object(depth)
	case b == '[':
		return c.array(depth)
	case b == '"':
		return c.str()
	case b == 't':
		return c.lit("true")
	case b == 'f':
		return c.lit("false")
	case b == 'n':
		return c.lit("null")
	case b == '-' || (b >= '0' && b <= '9'):
		return c.num()
	}
	return false
}

func (c *canon) lit(s string) bool {
	if len(c.in)-c.i < len(s) || string(c.in[c.i:c.i+len(s)]) != s {
		return false
	}
	c.i += len(s)
	c.out = append(c.out, s...)
	return true
}

// num accepts -?(0|[1-9][0-9]{0,14}) not followed by a fraction or an
// exponent, and not -0.
func (c *canon) num() bool {
	start := c.i
	if c.in[c.i] == '-' {
		c.i++
	}
	ds := c.i
	for c.i < len(c.in) && c.in[c.i] >= '0' && c.in[c.i] <= '9' {
		c.i++
	}
	n := c.i - ds
	switch {
	case n == 0 || n > 15:
		return false
	case c.in[ds] == '0' && (n > 1 || ds > start): // leading zero, or -0
		return false
	case c.i < len(c.in) && (c.in[c.i] == '.' || c.in[c.i] == 'e' || c.in[c.i] == 'E'):
		return false
	}
	c.out = append(c.out, c.in[start:c.i]...)
	return true
}

func hexVal(b byte) (rune, bool) {
	switch {
	case b >= '0' && b <= '9':
		return rune(b - '0'), true
	case b >= 'a' && b <= 'f':
		return rune(b-'a') + 10, true
	case b >= 'A' && b <= 'F':
		return rune(b-'A') + 10, true
	}
	return 0, false
}

// str copies a string literal in its JCS form: only '"', '\\' and control
// characters escaped (\b \t \n \f \r, else \u00xx), everything else as
// UTF-8.
func (c *canon) str() bool {
	c.i++ // opening quote
	c.out = append(c.out, '"')
	for c.i < len(c.in) {
		b := c.in[c.i]
		switch {
		case b == '"':
			c.i++
			c.out = append(c.out, '"')
			return true
		case b == '\\':
			if c.i+1 >= len(c.in) {
				return false
			}
			e := c.in[c.i+1]
			c.i += 2
			switch e {
			case '"', '\\':
				c.out = append(c.out, '\\', e)
			case '/':
				c.out = append(c.out, '/')
			case 'b':
				c.out = append(c.out, '\\', 'b')
			case 'f':
				c.out = append(c.out, '\\', 'f')
			case 'n':
				c.out = append(c.out, '\\', 'n')
			case 'r':
				c.out = append(c.out, '\\', 'r')
			case 't':
				c.out = append(c.out, '\\', 't')
			case 'u':
				if c.i+4 > len(c.in) {
					return false
				}
				var r rune
				for _, h := range c.in[c.i : c.i+4] {
					v, ok := hexVal(h)
					if !ok {
						return false
					}
					r = r<<4 | v
				}
				c.i += 4
				if r >= 0xD800 && r <= 0xDFFF {
					return false // surrogates: left to jcs
				}
				c.appendRune(r)
			default:
				return false
			}
		case b < 0x20:
			return false
		case b < utf8.RuneSelf:
			c.out = append(c.out, b)
			c.i++
		default:
			r, size := utf8.DecodeRune(c.in[c.i:])
			if r == utf8.RuneError && size <= 1 {
				return false
			}
			c.out = append(c.out, c.in[c.i:c.i+size]...)
			c.i += size
		}
	}
	return false
}

func (c *canon) appendRune(r rune) {
	const hexDigits = "0123456789abcdef"
	switch {
	case r == '"' || r == '\\':
		c.out = append(c.out, '\\', byte(r))
	case r == '\b':
		c.out = append(c.out, '\\', 'b')
	case r == '\t':
		c.out = append(c.out, '\\', 't')
	case r == '\n':
		c.out = append(c.out, '\\', 'n')
	case r == '\f':
		c.out = append(c.out, '\\', 'f')
	case r == '\r':
		c.out = append(c.out, '\\', 'r')
	case r < 0x20:
		c.out = append(c.out, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
	default:
		c.out = utf8.AppendRune(c.out, r)
	}
}

func (c *canon) array(depth int) bool {
	c.i++
	c.out = append(c.out, '[')
	c.ws()
	if c.i < len(c.in) && c.in[c.i] == ']' {
		c.i++
		c.out = append(c.out, ']')
		return true
	}
	for {
		if !c.value(depth + 1) {
			return false
		}
		c.ws()
		if c.i >= len(c.in) {
			return false
		}
		switch c.in[c.i] {
		case ',':
			c.i++
			c.out = append(c.out, ',')
		case ']':
			c.i++
			c.out = append(c.out, ']')
			return true
		default:
			return false
		}
	}
}

func (c *canon) object(depth int) bool {
	c.i++
	c.out = append(c.out, '{')
	base := len(c.out)
	c.ws()
	if c.i < len(c.in) && c.in[c.i] == '}' {
		c.i++
		c.out = append(c.out, '}')
		return true
	}
	var buf [24]canonMember
	ms := buf[:0]
	for {
		c.ws()
		if c.i >= len(c.in) || c.in[c.i] != '"' {
			return false
		}
		ks := len(c.out)
		if !c.str() {
			return false
		}
		ke := len(c.out)
		// Keys must be plain ASCII without escapes, so that their bytes
		// order like their UTF-16 code units.
		for _, b := range c.out[ks+1 : ke-1] {
			if b >= utf8.RuneSelf || b == '\\' {
				return false
			}
		}
		c.ws()
		if c.i >= len(c.in) || c.in[c.i] != ':' {
			return false
		}
		c.i++
		if !c.value(depth + 1) {
			return false
		}
		ms = append(ms, canonMember{ks: ks, ke: ke, ve: len(c.out)})
		c.ws()
		if c.i >= len(c.in) {
			return false
		}
		if c.in[c.i] == ',' {
			c.i++
			continue
		}
		if c.in[c.i] != '}' {
			return false
		}
		c.i++
		break
	}
	out := c.out
	key := func(m canonMember) []byte { return out[m.ks+1 : m.ke-1] } // without the quotes
	slices.SortFunc(ms, func(a, b canonMember) int { return bytes.Compare(key(a), key(b)) })
	for k := 1; k < len(ms); k++ {
		if bytes.Equal(key(ms[k-1]), key(ms[k])) {
			return false // duplicate: jcs rejects it
		}
	}
	c.scratch = append(c.scratch[:0], c.out[base:]...)
	c.out = c.out[:base]
	for k, m := range ms {
		if k > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[m.ks-base:m.ke-base]...)
		c.out = append(c.out, ':')
		c.out = append(c.out, c.scratch[m.ke-base:m.ve-base]...)
	}
	c.out = append(c.out, '}')
	return true
}
