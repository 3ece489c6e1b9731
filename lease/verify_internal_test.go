package lease

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

// derOracle is what ecdsa.Verify encodes r and s to: a SEQUENCE of two
// minimal positive INTEGERs.
func derOracle(raw *[64]byte) ([]byte, bool) {
	r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, false
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	if err != nil {
		panic(err)
	}
	return der, true
}

// rawSig builds r||s from two 32-byte halves given as hex-free byte patterns.
func rawSig(r, s []byte) *[64]byte {
	var raw [64]byte
	copy(raw[32-len(r):32], r)
	copy(raw[64-len(s):], s)
	return &raw
}

func TestSignatureDER(t *testing.T) {
	ff := []byte(strings.Repeat("\xff", 32))
	cases := map[string]*[64]byte{
		"zero_r":          rawSig(nil, []byte{1}),
		"zero_s":          rawSig([]byte{1}, nil),
		"both_zero":       rawSig(nil, nil),
		"one_one":         rawSig([]byte{1}, []byte{1}),
		"high_bits":       rawSig(ff, ff),
		"high_bit_r_only": rawSig([]byte{0x80}, []byte{0x7f}),
		"leading_zeros":   rawSig([]byte{0, 0, 0x80, 1}, []byte{0, 0x01, 0xff}),
		"short_high":      rawSig([]byte{0x81, 0, 0}, []byte{0x7f, 0xff}),
	}
	for name, raw := range cases {
		got, gotOK := signatureDER(raw)
		want, wantOK := derOracle(raw)
		if gotOK != wantOK || string(got) != string(want) {
			t.Errorf("signatureDER(%s) = %x, %v; want %x, %v", name, got, gotOK, want, wantOK)
		}
	}
}

// FuzzSignatureDER checks signatureDER against encoding/asn1 for any r||s.
func FuzzSignatureDER(f *testing.F) {
	f.Add(make([]byte, 64))
	f.Add([]byte(strings.Repeat("\xff", 64)))
	f.Add([]byte(strings.Repeat("\x00\x80", 32)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw [64]byte
		copy(raw[:], b)
		got, gotOK := signatureDER(&raw)
		want, wantOK := derOracle(&raw)
		if gotOK != wantOK || string(got) != string(want) {
			t.Fatalf("signatureDER(%x) = %x, %v; want %x, %v", raw, got, gotOK, want, wantOK)
		}
	})
}

// TestVerifyES256MatchesVerify checks verifyES256 against ecdsa.Verify on
// r and s, which it used before: the same signatures pass, high S included.
func TestVerifyES256MatchesVerify(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const input = "header.payload"
	sum := sha256.Sum256([]byte(input))
	n := elliptic.P256().Params().N
	sign := func() (*big.Int, *big.Int) {
		r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return r, s
	}
	// A signature whose r has a leading zero byte (1 in 256).
	var shortR, shortS *big.Int
	for shortR == nil || shortR.BitLen() > 248 {
		shortR, shortS = sign()
	}
	r, s := sign()
	otherR, otherS := sign()
	type pair struct{ r, s *big.Int }
	cases := map[string]pair{
		"valid":         {r, s},
		"high_s":        {r, new(big.Int).Sub(n, s)},
		"short_r":       {shortR, shortS},
		"r_plus_n":      {new(big.Int).Add(r, n), s}, // fits in 32 bytes only sometimes; skipped otherwise
		"r_is_n":        {new(big.Int).Set(n), s},
		"s_is_n":        {r, new(big.Int).Set(n)},
		"r_zero":        {new(big.Int), s},
		"s_zero":        {r, new(big.Int)},
		"r_one":         {big.NewInt(1), s},
		"other_message": {otherR, otherS},
	}
	otherSum := sha256.Sum256([]byte("other"))
	for name, p := range cases {
		if p.r.BitLen() > 256 || p.s.BitLen() > 256 {
			continue
		}
		var raw [64]byte
		p.r.FillBytes(raw[:32])
		p.s.FillBytes(raw[32:])
		msg := input
		hash := sum[:]
		if name == "other_message" {
			msg, hash = "other", otherSum[:]
		}
		want := ecdsa.Verify(&priv.PublicKey, hash, p.r, p.s)
		err := verifyES256(&priv.PublicKey, msg, base64.RawURLEncoding.EncodeToString(raw[:]))
		if (err == nil) != want {
			t.Errorf("verifyES256(%s) = %v; ecdsa.Verify = %v", name, err, want)
		}
		if mustPass := name == "valid" || name == "high_s" || name == "short_r"; mustPass && err != nil {
			t.Errorf("verifyES256(%s) = %v, want nil", name, err)
		}
	}
	for _, sig := range []string{"", "AAAA", strings.Repeat("A", 85), strings.Repeat("A", 87), strings.Repeat("A", 86) + "=", strings.Repeat("+", 86)} {
		if err := verifyES256(&priv.PublicKey, input, sig); err == nil {
			t.Errorf("verifyES256(sig %q) = nil, want bad_signature", sig)
		}
	}
}

func TestSumString(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 512, 700, 4096} {
		s := strings.Repeat("ab", n)[:n]
		if got, want := sumString(s), sha256.Sum256([]byte(s)); got != want {
			t.Errorf("sumString(%d bytes) = %x, want %x", n, got, want)
		}
	}
}

func TestHashMatches(t *testing.T) {
	sum := sha256.Sum256([]byte("token"))
	b64 := base64.RawURLEncoding.EncodeToString(sum[:])
	other := []byte(b64)
	other[42] ^= 1
	cases := []struct {
		in   string
		want bool
	}{
		{b64, true},
		{string(other), false},
		{b64[:42], false},
		{b64 + "A", false},
		{b64 + "=", false},
		{base64.URLEncoding.EncodeToString(sum[:]), false},
		{"", false},
	}
	for _, c := range cases {
		if got := hashMatches(c.in, sum); got != c.want {
			t.Errorf("hashMatches(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestConstantTimeEqual(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"", "a", false},
		{strings.Repeat("y", 64), strings.Repeat("y", 64), true},
		{strings.Repeat("y", 64), strings.Repeat("y", 65), false},
		{long, long, true},
		{long, long[:99] + "y", false},
		{long, "x", false},
	}
	for _, c := range cases {
		if got := constantTimeEqual(c.a, c.b); got != c.want {
			t.Errorf("constantTimeEqual(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// splitOracle is how VerifyProof split a proof before splitCompact.
func splitOracle(s string) (hdr, payload, sig string, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// FuzzSplitCompact checks splitCompact against strings.Split.
func FuzzSplitCompact(f *testing.F) {
	for _, s := range []string{"", ".", "..", "...", "a.b.c", "a.b.c.", ".b.c", "a..c", "a.b.", "a.b.c.d", "abc", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, p, sig, ok := splitCompact(s)
		wh, wp, wsig, wok := splitOracle(s)
		if h != wh || p != wp || sig != wsig || ok != wok {
			t.Fatalf("splitCompact(%q) = %q, %q, %q, %v; want %q, %q, %q, %v", s, h, p, sig, ok, wh, wp, wsig, wok)
		}
	})
}

func TestHeaderCache(t *testing.T) {
	c := newHeaderCache(3)
	keys := make([]*proofKey, 10)
	for i := range keys {
		keys[i] = &proofKey{jkt: fmt.Sprint(i)}
		seg := fmt.Sprintf("seg%d", i)
		c.add(seg, keys[i])
		if n := c.len(); n > 3 {
			t.Fatalf("len after %d adds = %d, want ≤ 3", i+1, n)
		}
		if got := c.get(seg); got != keys[i] {
			t.Fatalf("get(%s) just after add = %v, want %v", seg, got, keys[i])
		}
	}
	// Adding a cached segment again keeps its key and evicts nothing.
	c.add("seg9", &proofKey{jkt: "other"})
	if got := c.get("seg9"); got != keys[9] || c.len() != 3 {
		t.Errorf("get(seg9) after re-add = %v (len %d), want %v (len 3)", got, c.len(), keys[9])
	}
	long := strings.Repeat("A", maxCachedHeaderLen+1)
	c.add(long, keys[0])
	if got := c.get(long); got != nil {
		t.Errorf("get(%d-byte segment) = %v, want nil (not cached)", len(long), got)
	}
	if got := c.get("never"); got != nil {
		t.Errorf("get(never) = %v, want nil", got)
	}
}

func TestClaimsClone(t *testing.T) {
	calls, cost := int64(7), int64(9)
	for _, n := range []int{0, 1, 4, 5, 9} {
		for _, budgets := range []Budgets{{}, {MaxCalls: &calls}, {MaxCalls: &calls, MaxCostCents: &cost}} {
			c := &Claims{Subject: "s", SessionID: "sid", JTI: "j", JKT: "k", Budgets: budgets}
			for i := range n {
				c.Scopes = append(c.Scopes, fmt.Sprint("scope", i))
			}
			want := &Claims{}
			*want = *c
			want.Scopes = append([]string(nil), c.Scopes...) // clone's contract: nil when none
			got := c.clone()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("clone(%d scopes, %+v) = %+v, want %+v", n, budgets, got, want)
			}
			if got.Budgets.MaxCalls != nil && got.Budgets.MaxCalls == c.Budgets.MaxCalls ||
				got.Budgets.MaxCostCents != nil && got.Budgets.MaxCostCents == c.Budgets.MaxCostCents {
				t.Fatalf("clone(%+v) shares budget pointers", budgets)
			}
			// Changing the copy leaves c alone.
			if n > 0 {
				got.Scopes[0] = "mutated"
			}
			got.Scopes = append(got.Scopes, "appended")
			if got.Budgets.MaxCalls != nil {
				*got.Budgets.MaxCalls = 100
			}
			if got.Budgets.MaxCostCents != nil {
				*got.Budgets.MaxCostCents = 100
			}
			if again := c.clone(); !reflect.DeepEqual(again, want) || calls != 7 || cost != 9 {
				t.Fatalf("clone after changing a copy = %+v, want %+v", again, want)
			}
		}
	}
}

// FuzzSameHTU checks sameHTU(a, b) against comparing NormalizeHTU's strings.
func FuzzSameHTU(f *testing.F) {
	pairs := [][2]string{
		{"http://localhost/v1/x", "HTTP://LocalHost:80/v1/x?q=1#f"},
		{"https://[::1]:443/a", "https://[::1]/a"},
		{"http://h", "http://h/"},
		{"http://h:8080/a", "http://h/a"},
		{"no-scheme?x", "no-scheme"},
		{"http://h/a", "http://h/A"},
		{"a:://b/c", "A:://B/c"},
		{"x://y", "x:/" + "/y/"},
		{"http://user@Host:80/P%41th", "http://user@host/P%41th"},
		{"http://\xff/", "http://\uFFFD/"},
		{"HTTP://K/", "http://\u212a/"},
		{"https://:443:443", "https://:443/"},
	}
	for _, p := range pairs {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := sameHTU(a, b), NormalizeHTU(a) == NormalizeHTU(b); got != want {
			t.Fatalf("sameHTU(%q, %q) = %v, want %v (%q, %q)", a, b, got, want, NormalizeHTU(a), NormalizeHTU(b))
		}
	})
}
