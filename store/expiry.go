package store

import (
	"encoding/hex"
	"maps"
	"time"
)

// expirySet holds keys that expire: the embedded store's consumed-grant
// markers and replay entries, one per request each. Keys in the form the
// gate uses (a canonical UUID for grant ids, 32 lowercase hex digits for
// replay keys) are kept as 16 bytes with a Unix-nanosecond expiry, a 24-byte
// map slot; a string key and a time.Time took ≈ 110 bytes. Any other key
// goes to a string-keyed map, so every key keeps its exact meaning.
type expirySet struct {
	form    keyForm
	compact map[[16]byte]int64 // expiry, Unix nanoseconds
	other   map[string]time.Time
}

// keyForm is the canonical spelling that the compact map accepts.
type keyForm uint8

const (
	formUUID keyForm = iota // 8-4-4-4-12 lowercase hex digits
	formHex                 // 32 lowercase hex digits
)

func newExpirySet(form keyForm) *expirySet {
	return &expirySet{form: form, compact: map[[16]byte]int64{}, other: map[string]time.Time{}}
}

// parse returns k's 16 bytes when k is in the set's canonical form, so
// that format gives k back exactly.
func (s *expirySet) parse(k string) ([16]byte, bool) {
	var b [16]byte
	var digits string
	switch s.form {
	case formUUID:
		if len(k) != 36 || k[8] != '-' || k[13] != '-' || k[18] != '-' || k[23] != '-' {
			return b, false
		}
		digits = k[0:8] + k[9:13] + k[14:18] + k[19:23] + k[24:36]
	case formHex:
		if len(k) != 32 {
			return b, false
		}
		digits = k
	}
	for i := range len(digits) {
		if c := digits[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return b, false // upper case or not hex: not canonical
		}
	}
	if _, err := hex.Decode(b[:], []byte(digits)); err != nil {
		return b, false
	}
	return b, true
}

func (s *expirySet) format(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	if s.form == formHex {
		return h
	}
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (s *expirySet) put(k string, exp time.Time) {
	if b, ok := s.parse(k); ok {
		s.compact[b] = exp.UnixNano()
		return
	}
	s.other[k] = exp
}

// live reports whether k is in the set and expires after now.
func (s *expirySet) live(k string, now time.Time) bool {
	if b, ok := s.parse(k); ok {
		exp, ok := s.compact[b]
		return ok && exp > now.UnixNano()
	}
	exp, ok := s.other[k]
	return ok && exp.After(now)
}

// sweep drops the keys that expired at or before now.
func (s *expirySet) sweep(now time.Time) {
	n := now.UnixNano()
	for b, exp := range s.compact {
		if exp <= n {
			delete(s.compact, b)
		}
	}
	for k, exp := range s.other {
		if !exp.After(now) {
			delete(s.other, k)
		}
	}
}

// each calls fn for every key, with its expiry.
func (s *expirySet) each(fn func(k string, exp time.Time)) {
	for b, exp := range s.compact {
		fn(s.format(b), time.Unix(0, exp).UTC())
	}
	for k, exp := range s.other {
		fn(k, exp)
	}
}

// clone returns an independent copy.
func (s *expirySet) clone() *expirySet {
	return &expirySet{form: s.form, compact: maps.Clone(s.compact), other: maps.Clone(s.other)}
}

func (s *expirySet) len() int { return len(s.compact) + len(s.other) }
