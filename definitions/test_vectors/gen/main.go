// Command gen writes LatchGate's shared test vectors (definitions/test_vectors:
// jcs/, dpop/, receipts/) that the gate and the Go, Python and TypeScript SDKs
// check themselves against.
//
// It is deterministic: every key is derived from a fixed label, every time is
// fixed, ECDSA signatures use RFC 6979 and Ed25519 is deterministic, so running
// it twice writes the same bytes. gen_test.go fails when the committed files
// drift from what this program produces. It never reads the environment or the
// clock. Regenerate from the repository root with:
//
//	go run ./definitions/test_vectors/gen
//
// The file formats are a stable contract between the SDKs; see
// definitions/test_vectors/README.md.
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gowebpki/jcs"
)

func main() {
	out := flag.String("out", "definitions/test_vectors", "directory to write the vectors into (the test_vectors folder)")
	flag.Parse()
	files, err := generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(*out, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", path)
	}
}

// generate returns every vector file keyed by its slash path below test_vectors.
func generate() (map[string][]byte, error) {
	files := map[string][]byte{}
	steps := []struct {
		name string
		fn   func() (any, error)
	}{
		{"jcs/golden.json", jcsVectors},
		{"dpop/thumbprints.json", thumbprintVectors},
		{"dpop/htu.json", htuVectors},
		{"dpop/proofs.json", proofVectors},
		{"receipts/receipts.json", receiptVectors},
	}
	for _, s := range steps {
		v, err := s.fn()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		b, err := encode(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		files[s.name] = b
	}
	return files, nil
}

// encode writes v as indented JSON without HTML escaping and with a final newline.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func sha256B64(b []byte) string {
	sum := sha256.Sum256(b)
	return b64(sum[:])
}

// ---------------------------------------------------------------- JCS

type jcsCase struct {
	Name      string `json:"name"`
	Input     string `json:"input"`
	Canonical string `json:"canonical"`
	SHA256    string `json:"sha256"`
}

type jcsInvalid struct {
	Name  string `json:"name"`
	Input string `json:"input"`
}

type jcsFile struct {
	Cases   []jcsCase    `json:"cases"`
	Invalid []jcsInvalid `json:"invalid"`
}

func jcsVectors() (any, error) {
	// want is the canonical form written by hand from RFC 8785; generation
	// fails if gowebpki/jcs disagrees, so the file never silently follows a
	// library bug.
	cases := []struct{ name, input, want string }{
		{"literals", `[true, false, null]`, `[true,false,null]`},
		{"empty_object", ` { } `, `{}`},
		{"empty_array", `[ ]`, `[]`},
		{"top_level_string", `"abc"`, `"abc"`},
		{"top_level_number", ` 42 `, `42`},
		{"zero", `0`, `0`},
		{"negative_zero", `-0`, `0`},
		{"negative_zero_float", `[-0.0]`, `[0]`},
		{"integer_trailing_zeros", `[1.0, 4.50, 100]`, `[1,4.5,100]`},
		{"exp_1e21", `1e21`, `1e+21`},
		{"exp_1E21_upper", `1E21`, `1e+21`},
		{"below_1e21", `[999999999999999700000, 999999999999999900000]`, `[999999999999999700000,999999999999999900000]`},
		{"exp_1e-7", `1e-7`, `1e-7`},
		{"small_0_000001", `0.000001`, `0.000001`},
		{"min_subnormal", `5e-324`, `5e-324`},
		{"neg_min_subnormal", `-5e-324`, `-5e-324`},
		{"max_double", `1.7976931348623157e308`, `1.7976931348623157e+308`},
		{"min_normal", `2.2250738585072014e-308`, `2.2250738585072014e-308`},
		{"two_pow_53_plus_1_as_double", `9007199254740993`, `9007199254740992`},
		{"two_pow_53", `9007199254740992`, `9007199254740992`},
		{"two_pow_68", `295147905179352830000`, `295147905179352830000`},
		{"point_one", `0.1`, `0.1`},
		{"point_one_plus_point_two", `0.30000000000000004`, `0.30000000000000004`},
		{"exp_1e23", `1e23`, `1e+23`},
		{"below_1e23", `9.999999999999997e22`, `9.999999999999997e+22`},
		{"thirds", `333333333.3333333`, `333333333.3333333`},
		{"thirds_long_input", `333333333.33333329`, `333333333.3333333`},
		{"large_exponents", `[1e30, 1E+300, -1.5e200]`, `[1e+30,1e+300,-1.5e+200]`},
		{"small_exponents", `[2e-3, 0.000000000000000000000000001, 1e-300, -4.35e-100]`, `[0.002,1e-27,1e-300,-4.35e-100]`},
		{"control_escapes", `"\u0000\u0001\u0007\b\t\n\u000b\f\r\u000e\u001f\u0020"`, `"\u0000\u0001\u0007\b\t\n\u000b\f\r\u000e\u001f "`},
		{"quote_backslash", `"a\"b\\c"`, `"a\"b\\c"`},
		{"solidus_not_escaped", `"a\/b/c"`, `"a/b/c"`},
		{"del_raw", `"\u007f"`, "\"\u007f\""},
		{"line_separator_raw", `"\u2028\u2029"`, "\"\u2028\u2029\""},
		{"unicode_escape_decoded", `"\u00e9\u20AC"`, `"é€"`},
		{"emoji_raw", `"😀"`, `"😀"`},
		{"emoji_surrogate_escape", `"\ud83d\ude00"`, `"😀"`},
		{"emoji_surrogate_escape_upper", `"\uD83D\uDE00x"`, `"😀x"`},
		{"non_bmp_mixed", `["𝄞", "\ud834\udd1e"]`, `["𝄞","𝄞"]`},
		{"key_order_ascii", `{"b":1,"a":2,"A":3,"":4,"aa":5}`, `{"":4,"A":3,"a":2,"aa":5,"b":1}`},
		{
			"key_order_utf16",
			`{"\u20ac":1,"\r":2,"1":3,"\ud83d\ude00":4,"\u0080":5,"ö":6,"\ufb33":7}`,
			"{\"\\r\":2,\"1\":3,\"\u0080\":5,\"ö\":6,\"€\":1,\"😀\":4,\"\ufb33\":7}",
		},
		{
			"key_order_surrogate_before_bmp_high",
			`{"\uffff":1,"\ud800\udc00":2}`,
			"{\"\U00010000\":2,\"\uffff\":1}",
		},
		{
			"nested",
			`{"z":{"b":[1,{"d":true,"c":null}],"a":{}},"y":[[],[[]]]}`,
			`{"y":[[],[[]]],"z":{"a":{},"b":[1,{"c":null,"d":true}]}}`,
		},
		{
			"whitespace",
			"{\n\t\"a\" :\r\n [ 1 , 2 ] ,\"b\": \"x y\" }",
			`{"a":[1,2],"b":"x y"}`,
		},
		{
			"rfc8785_3_2_2_example",
			`{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			"rfc8785_3_2_3_sorting_example",
			`{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{
			"receipt_like",
			`{"output":{"echo":{"message":"hi <&>"}},"action_id":"echo","seq":1,"prev_hash":null,"output_truncated":false}`,
			`{"action_id":"echo","output":{"echo":{"message":"hi <&>"}},"output_truncated":false,"prev_hash":null,"seq":1}`,
		},
	}
	invalid := []struct{ name, input string }{
		{"lone_high_surrogate", `"\ud800"`},
		{"lone_low_surrogate", `"\udc00"`},
		{"lone_high_surrogate_in_key", `{"\ud83d":1}`},
		{"high_surrogate_then_non_low", `"\ud83d\u0041"`},
		{"reversed_surrogates", `"\ude00\ud83d"`},
		{"duplicate_key", `{"a":1,"a":2}`},
		{"duplicate_key_after_unescape", `{"a":1,"\u0061":2}`},
		{"trailing_comma_array", `[1,2,]`},
		{"trailing_comma_object", `{"a":1,}`},
		{"unquoted_key", `{a:1}`},
		{"single_quotes", `{'a':1}`},
		{"leading_zero", `01`},
		{"leading_plus", `+1`},
		{"bare_dot", `.5`},
		{"nan", `NaN`},
		{"infinity", `Infinity`},
		{"number_overflow", `1e400`},
		{"raw_control_char_in_string", "\"a\u0001b\""},
		{"bad_escape", `"\x41"`},
		{"truncated_object", `{"a":1`},
		{"truncated_string", `"abc`},
		{"two_values", `1 2`},
		{"empty_document", ``},
		{"comment", `{"a":1 /* no */}`},
	}
	var f jcsFile
	for _, c := range cases {
		got, err := jcs.Transform([]byte(c.input))
		if err != nil {
			return nil, fmt.Errorf("case %s: jcs rejected valid input: %w", c.name, err)
		}
		if string(got) != c.want {
			return nil, fmt.Errorf("case %s: jcs.Transform(%q) = %q, want %q", c.name, c.input, got, c.want)
		}
		f.Cases = append(f.Cases, jcsCase{Name: c.name, Input: c.input, Canonical: string(got), SHA256: sha256Hex(got)})
	}
	for _, c := range invalid {
		if got, err := jcs.Transform([]byte(c.input)); err == nil {
			return nil, fmt.Errorf("invalid %s: jcs accepted %q as %q", c.name, c.input, got)
		}
		f.Invalid = append(f.Invalid, jcsInvalid{Name: c.name, Input: c.input})
	}
	return f, nil
}

// ---------------------------------------------------------------- keys

// p256Key derives a fixed P-256 key from label (test vectors only).
func p256Key(label string) (*ecdsa.PrivateKey, error) {
	d := sha256.Sum256([]byte("latchgate test vector p256: " + label))
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
}

// ed25519Key derives a fixed Ed25519 key from label (test vectors only).
func ed25519Key(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("latchgate test vector ed25519: " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

type ecJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d,omitempty"`
}

func ecPublicJWK(k *ecdsa.PublicKey) (ecJWK, error) {
	raw, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		return ecJWK{}, err
	}
	return ecJWK{Kty: "EC", Crv: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:65])}, nil
}

// ecThumbprint is RFC 7638 over {"crv","kty","x","y"} in that order, no spaces.
func ecThumbprint(j ecJWK) string {
	return sha256B64([]byte(`{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`))
}

// edThumbprint is RFC 7638 over {"crv","kty","x"} of an Ed25519 key.
func edThumbprint(pub ed25519.PublicKey) string {
	return sha256B64([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + b64(pub) + `"}`))
}

// joseThumbprint cross-checks a thumbprint with go-jose.
func joseThumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return b64(tp), nil
}

// ---------------------------------------------------------------- DPoP thumbprints

type thumbprintCase struct {
	Name       string `json:"name"`
	JWK        ecJWK  `json:"jwk"`
	Thumbprint string `json:"thumbprint"`
}

func thumbprintVectors() (any, error) {
	var cases []thumbprintCase
	for _, label := range []string{"agent-1", "agent-2", "agent-3", "dpop-proofs"} {
		k, err := p256Key(label)
		if err != nil {
			return nil, err
		}
		j, err := ecPublicJWK(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		tp := ecThumbprint(j)
		jtp, err := joseThumbprint(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		if tp != jtp {
			return nil, fmt.Errorf("thumbprint %s: ours %s, go-jose %s", label, tp, jtp)
		}
		cases = append(cases, thumbprintCase{Name: label, JWK: j, Thumbprint: tp})
	}
	return map[string]any{"cases": cases}, nil
}

// ---------------------------------------------------------------- htu

type htuCase struct {
	Input      string `json:"input"`
	Normalized string `json:"normalized"`
}

// normalizeHTU is PROTOCOL.md §1.1: drop "#…" then "?…", lowercase scheme and
// authority, keep the path as-is, empty path → "/", drop the default port
// (found with the last ':' so IPv6 literals work).
func normalizeHTU(u string) string {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		u = u[:i]
	}
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	scheme = strings.ToLower(scheme)
	authority, path := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	authority = strings.ToLower(authority)
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		port := authority[i+1:]
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			authority = authority[:i]
		}
	}
	return scheme + "://" + authority + path
}

func htuVectors() (any, error) {
	cases := []htuCase{
		{"http://localhost/v1/x", "http://localhost/v1/x"},
		{"http://localhost/v1/actions/echo/execute", "http://localhost/v1/actions/echo/execute"},
		{"HTTP://LocalHost/v1/X", "http://localhost/v1/X"},
		{"http://localhost:80/v1/x", "http://localhost/v1/x"},
		{"https://Gate.Example.COM:443/v1/x", "https://gate.example.com/v1/x"},
		{"http://localhost:443/v1/x", "http://localhost:443/v1/x"},
		{"https://gate.example.com:80/v1/x", "https://gate.example.com:80/v1/x"},
		{"http://localhost:3000/v1/x", "http://localhost:3000/v1/x"},
		{"http://127.0.0.1:8080/v1/leases", "http://127.0.0.1:8080/v1/leases"},
		{"http://localhost", "http://localhost/"},
		{"http://localhost:80", "http://localhost/"},
		{"http://localhost:8080", "http://localhost:8080/"},
		{"http://localhost?x=1", "http://localhost/"},
		{"http://localhost/v1/x?q=1", "http://localhost/v1/x"},
		{"http://localhost/v1/x#frag", "http://localhost/v1/x"},
		{"http://localhost/v1/x#frag?q=1", "http://localhost/v1/x"},
		{"http://localhost/v1/x?q=1#frag", "http://localhost/v1/x"},
		{"http://localhost/v1/a%2Fb%2f/C", "http://localhost/v1/a%2Fb%2f/C"},
		{"http://Example.COM:80/%7Euser/Path", "http://example.com/%7Euser/Path"},
		{"http://[::1]/v1/x", "http://[::1]/v1/x"},
		{"http://[::1]:80/v1/x", "http://[::1]/v1/x"},
		{"http://[::1]:3000/v1/x", "http://[::1]:3000/v1/x"},
		{"HTTPS://[2001:DB8::1]:443/Path", "https://[2001:db8::1]/Path"},
		{"https://[2001:db8::80]/v1/x", "https://[2001:db8::80]/v1/x"},
		{"http://localhost//v1/./x", "http://localhost//v1/./x"},
	}
	for _, c := range cases {
		if got := normalizeHTU(c.Input); got != c.Normalized {
			return nil, fmt.Errorf("normalizeHTU(%q) = %q, want %q", c.Input, got, c.Normalized)
		}
	}
	return map[string]any{"cases": cases}, nil
}

// ---------------------------------------------------------------- DPoP proofs

// vectorNow is the fixed "now" of the proof vectors: 2026-01-15T10:00:00Z.
const vectorNow = 1768471200

type proofCase struct {
	Name        string `json:"name"`
	Proof       string `json:"proof"`
	HTM         string `json:"htm"`
	HTU         string `json:"htu"`
	BodyB64URL  string `json:"body_b64url,omitempty"`
	ExpectValid bool   `json:"expect_valid"`
	Reason      string `json:"reason,omitempty"`
}

type proofFile struct {
	Comment    string      `json:"comment"`
	Key        ecJWK       `json:"key"`
	JKT        string      `json:"jkt"`
	LeaseToken string      `json:"lease_token"`
	Now        int64       `json:"now"`
	MaxAgeSec  int         `json:"max_age_seconds"`
	SkewSec    int         `json:"skew_seconds"`
	Proofs     []proofCase `json:"proofs"`
}

type proofClaims struct {
	JTI string `json:"jti"`
	HTM string `json:"htm"`
	HTU string `json:"htu"`
	IAT int64  `json:"iat"`
	ATH string `json:"ath"`
	BH  string `json:"bh,omitempty"`
}

// signES256 returns a compact JWS with a deterministic (RFC 6979) signature.
func signES256(k *ecdsa.PrivateKey, header, claims any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(h) + "." + b64(c)
	digest := sha256.Sum256([]byte(input))
	der, err := k.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return "", err
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return "", err
	}
	raw := make([]byte, 64)
	sig.R.FillBytes(raw[:32])
	sig.S.FillBytes(raw[32:])
	return input + "." + b64(raw), nil
}

func proofVectors() (any, error) {
	k, err := p256Key("dpop-proofs")
	if err != nil {
		return nil, err
	}
	pub, err := ecPublicJWK(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	d, err := k.Bytes()
	if err != nil {
		return nil, err
	}
	priv := pub
	priv.D = b64(d)
	header := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": pub}

	// The lease token is an opaque string here: proof checks only hash it.
	lease := "eyJhbGciOiJFUzI1NiIsImtpZCI6InZlY3RvciIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudDp2ZWN0b3IifQ.c2lnbmF0dXJlLW5vdC1jaGVja2VkLWluLXRoZXNlLXZlY3RvcnM"
	ath := sha256B64([]byte(lease))
	const execHTU = "http://localhost/v1/actions/echo/execute"
	body := []byte(`{"message":"hello"}`)

	type spec struct {
		name, htm, htu string
		body           []byte
		claims         proofClaims
		reason         string
		tamper         bool
	}
	base := func(jti string) proofClaims {
		return proofClaims{JTI: jti, HTM: "POST", HTU: execHTU, IAT: vectorNow, ATH: ath, BH: sha256B64(body)}
	}
	specs := []spec{
		{name: "valid_post_with_body", htm: "POST", htu: execHTU, body: body, claims: base("vector-jti-0001")},
		{name: "valid_get_empty_body", htm: "GET", htu: "http://localhost/v1/receipts/0194f3a0-0000-7000-8000-000000000001", claims: proofClaims{
			JTI: "vector-jti-0002", HTM: "GET", HTU: "http://localhost/v1/receipts/0194f3a0-0000-7000-8000-000000000001",
			IAT: vectorNow - 30, ATH: ath, BH: sha256B64(nil)}},
		{name: "valid_htu_needs_normalization", htm: "POST", htu: execHTU, body: body, claims: func() proofClaims {
			c := base("vector-jti-0003")
			c.HTU = "HTTP://LOCALHOST:80/v1/actions/echo/execute?x=1#f"
			return c
		}()},
		{name: "wrong_htu", htm: "POST", htu: execHTU, body: body, reason: "htu_mismatch", claims: func() proofClaims {
			c := base("vector-jti-0004")
			c.HTU = "http://localhost/v1/actions/http_fetch/execute"
			return c
		}()},
		{name: "wrong_htu_path_case", htm: "POST", htu: execHTU, body: body, reason: "htu_mismatch", claims: func() proofClaims {
			c := base("vector-jti-0005")
			c.HTU = "http://localhost/v1/actions/ECHO/execute"
			return c
		}()},
		{name: "wrong_htm", htm: "POST", htu: execHTU, body: body, reason: "htm_mismatch", claims: func() proofClaims {
			c := base("vector-jti-0006")
			c.HTM = "GET"
			return c
		}()},
		{name: "wrong_ath", htm: "POST", htu: execHTU, body: body, reason: "ath_mismatch", claims: func() proofClaims {
			c := base("vector-jti-0007")
			c.ATH = sha256B64([]byte(lease + "x"))
			return c
		}()},
		{name: "wrong_bh", htm: "POST", htu: execHTU, body: body, reason: "bh_mismatch", claims: func() proofClaims {
			c := base("vector-jti-0008")
			c.BH = sha256B64([]byte(`{"message":"HELLO"}`))
			return c
		}()},
		{name: "iat_too_old", htm: "POST", htu: execHTU, body: body, reason: "iat_out_of_window", claims: func() proofClaims {
			c := base("vector-jti-0009")
			c.IAT = vectorNow - 61
			return c
		}()},
		{name: "iat_in_future", htm: "POST", htu: execHTU, body: body, reason: "iat_out_of_window", claims: func() proofClaims {
			c := base("vector-jti-0010")
			c.IAT = vectorNow + 6
			return c
		}()},
		{name: "bad_signature", htm: "POST", htu: execHTU, body: body, reason: "bad_signature", tamper: true, claims: base("vector-jti-0011")},
	}
	f := proofFile{
		Comment: "DPoP proof vectors (PROTOCOL.md §2.1). Verify each proof against htm/htu/body (absent body_b64url = empty body) " +
			"with the lease_token, jkt and now given; iat window is [now-max_age_seconds, now+skew_seconds]. " +
			"reason is informative, not a wire deny_reason. TEST KEY ONLY.",
		Key: priv, JKT: ecThumbprint(pub), LeaseToken: lease, Now: vectorNow, MaxAgeSec: 60, SkewSec: 5,
	}
	for _, s := range specs {
		proof, err := signES256(k, header, s.claims)
		if err != nil {
			return nil, err
		}
		if s.tamper {
			// Flip one bit in the first signature byte.
			parts := strings.Split(proof, ".")
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			sig[0] ^= 0x01
			proof = parts[0] + "." + parts[1] + "." + b64(sig)
		}
		pc := proofCase{Name: s.name, Proof: proof, HTM: s.htm, HTU: s.htu, ExpectValid: s.reason == "", Reason: s.reason}
		if s.body != nil {
			pc.BodyB64URL = b64(s.body)
		}
		if err := checkProof(&k.PublicKey, f, pc); (err == nil) != pc.ExpectValid {
			return nil, fmt.Errorf("proof %s: self-check = %v, want valid=%v", s.name, err, pc.ExpectValid)
		}
		f.Proofs = append(f.Proofs, pc)
	}
	return f, nil
}

// checkProof is an independent verification of one proof vector, so a vector
// labelled valid really verifies and one labelled invalid really fails.
func checkProof(pub *ecdsa.PublicKey, f proofFile, pc proofCase) error {
	parts := strings.Split(pc.Proof, ".")
	if len(parts) != 3 {
		return errors.New("not a compact JWS")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return errors.New("bad signature encoding")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return errors.New("bad_signature")
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	var c proofClaims
	if err := json.Unmarshal(cb, &c); err != nil {
		return err
	}
	body, err := base64.RawURLEncoding.DecodeString(pc.BodyB64URL)
	if err != nil {
		return err
	}
	switch {
	case c.HTM != pc.HTM:
		return errors.New("htm_mismatch")
	case normalizeHTU(c.HTU) != normalizeHTU(pc.HTU):
		return errors.New("htu_mismatch")
	case c.IAT < f.Now-int64(f.MaxAgeSec) || c.IAT > f.Now+int64(f.SkewSec):
		return errors.New("iat_out_of_window")
	case c.ATH != sha256B64([]byte(f.LeaseToken)):
		return errors.New("ath_mismatch")
	case c.BH != sha256B64(body):
		return errors.New("bh_mismatch")
	}
	return nil
}

// ---------------------------------------------------------------- receipts

type receiptPeer struct {
	UID int `json:"uid"`
	PID int `json:"pid"`
}

type receiptResult struct {
	Kind    string `json:"kind"`
	Summary string `json:"summary"`
}

type receiptVerification struct {
	Status string `json:"status"`
}

type receiptEgress struct {
	Hosts []string `json:"hosts"`
}

type receiptApproval struct {
	Kind       string `json:"kind"`
	ApprovalID string `json:"approval_id"`
	ApprovedBy string `json:"approved_by"`
	ApprovedAt string `json:"approved_at"`
}

// receipt is PROTOCOL.md §5 in field order.
type receipt struct {
	ReceiptID            string              `json:"receipt_id"`
	Seq                  int                 `json:"seq"`
	PrevHash             *string             `json:"prev_hash"`
	GateID               string              `json:"gate_id"`
	TraceID              string              `json:"trace_id"`
	GrantID              string              `json:"grant_id"`
	ActionID             string              `json:"action_id"`
	ActionVersion        string              `json:"action_version"`
	ActionDigest         string              `json:"action_digest"`
	ProviderModuleDigest string              `json:"provider_module_digest"`
	Principal            string              `json:"principal"`
	SessionID            string              `json:"session_id"`
	AgentID              string              `json:"agent_id,omitempty"`
	Peer                 *receiptPeer        `json:"peer,omitempty"`
	RequestHash          string              `json:"request_hash"`
	ResponseHash         *string             `json:"response_hash"`
	Output               json.RawMessage     `json:"output"`
	OutputTruncated      bool                `json:"output_truncated"`
	NormalizedResult     receiptResult       `json:"normalized_result"`
	VerificationOutcome  receiptVerification `json:"verification_outcome"`
	Egress               receiptEgress       `json:"egress"`
	Approval             *receiptApproval    `json:"approval"`
	PolicyVersion        string              `json:"policy_version"`
	StartedAt            string              `json:"started_at"`
	FinishedAt           string              `json:"finished_at"`
	Hash                 string              `json:"hash,omitempty"`
	Signature            string              `json:"signature,omitempty"`
	KeyID                string              `json:"key_id,omitempty"`
}

type receiptEntry struct {
	Receipt receipt `json:"receipt"`
	Valid   bool    `json:"valid"`
	Note    string  `json:"note"`
}

type okpJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	D   string `json:"d"`
	Kid string `json:"kid"`
}

type receiptFile struct {
	Comment  string         `json:"comment"`
	Key      okpJWK         `json:"key"`
	Receipts []receiptEntry `json:"receipts"`
}

// jcsHash returns "sha256:<hex>" of the JCS form of v.
func jcsHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	c, err := jcs.Transform(b)
	if err != nil {
		return "", err
	}
	return sha256Hex(c), nil
}

// seal sets hash, signature and key_id of r with key.
func seal(r *receipt, key ed25519.PrivateKey) error {
	r.Hash, r.Signature, r.KeyID = "", "", ""
	h, err := jcsHash(r)
	if err != nil {
		return err
	}
	r.Hash = h
	r.Signature = b64(ed25519.Sign(key, []byte(h)))
	r.KeyID = edThumbprint(key.Public().(ed25519.PublicKey))
	return nil
}

func receiptVectors() (any, error) {
	key := ed25519Key("receipts")
	other := ed25519Key("receipts-other")
	pub := key.Public().(ed25519.PublicKey)
	kid := edThumbprint(pub)
	if jtp, err := joseThumbprint(pub); err != nil || jtp != kid {
		return nil, fmt.Errorf("ed25519 thumbprint: ours %s, go-jose %s (%v)", kid, jtp, err)
	}
	str := func(s string) *string { return &s }

	echoDigest := sha256Hex([]byte("echo manifest v1.0.0"))
	fetchDigest := sha256Hex([]byte("http_fetch manifest v1.0.0"))
	mk := func(seq int, action, version, digest string, args, output any) (receipt, error) {
		reqHash, err := jcsHash(args)
		if err != nil {
			return receipt{}, err
		}
		respHash, err := jcsHash(output)
		if err != nil {
			return receipt{}, err
		}
		out, err := json.Marshal(output)
		if err != nil {
			return receipt{}, err
		}
		return receipt{
			ReceiptID:            fmt.Sprintf("0194f3a0-0000-7000-8000-00000000000%d", seq),
			Seq:                  seq,
			GateID:               "gate-vectors",
			TraceID:              fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e473%d", seq),
			GrantID:              fmt.Sprintf("0194f3a0-0000-7000-9000-00000000000%d", seq),
			ActionID:             action,
			ActionVersion:        version,
			ActionDigest:         digest,
			ProviderModuleDigest: digest,
			Principal:            "agent:vector-agent",
			SessionID:            "0194f39f-0000-7000-8000-0000000000aa",
			AgentID:              "vector-agent",
			Peer:                 &receiptPeer{UID: 1000, PID: 4242},
			RequestHash:          reqHash,
			ResponseHash:         &respHash,
			Output:               out,
			NormalizedResult:     receiptResult{Kind: "success", Summary: "executor returned"},
			VerificationOutcome:  receiptVerification{Status: "unverifiable_declared"},
			Egress:               receiptEgress{Hosts: []string{}},
			PolicyVersion:        "sha256:" + strings.Repeat("ab", 32),
			StartedAt:            fmt.Sprintf("2026-01-15T10:00:0%d.000Z", seq),
			FinishedAt:           fmt.Sprintf("2026-01-15T10:00:0%d.125Z", seq),
		}, nil
	}

	r1, err := mk(1, "echo", "1.0.0", echoDigest,
		map[string]any{"message": "hello"},
		map[string]any{"echo": map[string]any{"message": "hello"}, "note": "ünïcödé € 😀 <&>"})
	if err != nil {
		return nil, err
	}
	if err := seal(&r1, key); err != nil {
		return nil, err
	}

	large := map[string]any{"echo": map[string]any{"message": strings.Repeat("x", 300*1024)}}
	r2, err := mk(2, "echo", "1.0.0", echoDigest, map[string]any{"message": strings.Repeat("x", 300*1024)}, large)
	if err != nil {
		return nil, err
	}
	r2.PrevHash = str(r1.Hash)
	r2.Output = json.RawMessage("null")
	r2.OutputTruncated = true
	if err := seal(&r2, key); err != nil {
		return nil, err
	}

	r3, err := mk(3, "http_fetch", "1.2.0", fetchDigest,
		map[string]any{"url": "https://api.example.com/v1/items?limit=2", "method": "GET"},
		map[string]any{"status": 200, "headers": map[string]any{"content-type": "application/json"},
			"body": map[string]any{"items": []any{1, 2.5, -0.000001, 1e21}}})
	if err != nil {
		return nil, err
	}
	r3.PrevHash = str(r2.Hash)
	r3.AgentID = ""
	r3.Peer = nil
	r3.NormalizedResult = receiptResult{Kind: "success", Summary: "upstream answered 200"}
	r3.VerificationOutcome = receiptVerification{Status: "verified"}
	r3.Egress = receiptEgress{Hosts: []string{"api.example.com"}}
	r3.Approval = &receiptApproval{Kind: "operator", ApprovalID: "0194f3a0-0000-7000-a000-000000000003",
		ApprovedBy: "uid:0", ApprovedAt: "2026-01-15T10:00:02.900Z"}
	if err := seal(&r3, key); err != nil {
		return nil, err
	}

	// Tampered: a field changed after signing, hash and signature kept.
	t1 := r1
	t1.Output = json.RawMessage(`{"echo":{"message":"hellO"},"note":"ünïcödé € 😀 <&>"}`)
	// Bad signature: hash is correct, but the signature was made with
	// another key while key_id names the real one.
	t2 := r3
	t2.Signature = b64(ed25519.Sign(other, []byte(t2.Hash)))

	f := receiptFile{
		Comment: "Receipt vectors (PROTOCOL.md §5). hash = \"sha256:\"+hex(SHA-256(JCS(receipt without hash, signature, key_id))); " +
			"signature = base64url-no-pad Ed25519 over the ASCII bytes of hash; key_id = RFC 7638 thumbprint of the public JWK. " +
			"The first three form a chain (prev_hash). TEST KEY ONLY.",
		Key: okpJWK{Kty: "OKP", Crv: "Ed25519", X: b64(pub), D: b64(key.Seed()), Kid: kid},
		Receipts: []receiptEntry{
			{r1, true, "seq 1, first in chain (prev_hash null), echo with non-ASCII output"},
			{r2, true, "seq 2, output over the cap: output null, output_truncated true, response_hash over the full output"},
			{r3, true, "seq 3, operator approval filled, egress host, verified outcome"},
			{t1, false, "seq 1 with output changed after signing: hash mismatch"},
			{t2, false, "seq 3 signed by another Ed25519 key under the real key_id: signature invalid"},
		},
	}
	// Self-check.
	for i, e := range f.Receipts {
		err := verifyReceipt(e.Receipt, pub)
		if (err == nil) != e.Valid {
			return nil, fmt.Errorf("receipt %d: self-check = %v, want valid=%v", i, err, e.Valid)
		}
	}
	return f, nil
}

// verifyReceipt recomputes the hash and checks the signature and key id.
func verifyReceipt(r receipt, pub ed25519.PublicKey) error {
	want, sig, kid := r.Hash, r.Signature, r.KeyID
	h, err := jcsHash(withoutSeal(r))
	if err != nil {
		return err
	}
	if h != want {
		return errors.New("hash mismatch")
	}
	if kid != edThumbprint(pub) {
		return errors.New("unknown key id")
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !ed25519.Verify(pub, []byte(want), s) {
		return errors.New("signature invalid")
	}
	return nil
}

func withoutSeal(r receipt) receipt {
	r.Hash, r.Signature, r.KeyID = "", "", ""
	return r
}
