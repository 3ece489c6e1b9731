package lease

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// benchProofJSON returns a typical proof header and payload as JSON.
func benchProofJSON(tb testing.TB) (header, payload []byte) {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	jwk, err := jwkOf(&priv.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	header, err = json.Marshal(map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk})
	if err != nil {
		tb.Fatal(err)
	}
	payload, err = json.Marshal(map[string]any{
		"jti": "Zx1c9Qh0Yb6q3nL8vT2wKa", "htm": "POST", "htu": "http://localhost/v1/actions/echo/execute",
		"iat": 1777636800, "ath": BodyHash([]byte(strings.Repeat("t", 700))), "bh": BodyHash([]byte(`{"msg":"hi"}`)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return header, payload
}

func BenchmarkDecodeStrict(b *testing.B) {
	header, payload := benchProofJSON(b)
	for _, c := range []struct {
		name string
		in   []byte
	}{{"header", header}, {"payload", payload}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.in)))
			for b.Loop() {
				if _, err := decodeStrict(c.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenHash is the ath check of a 700-byte lease token (it was
// tokenHash(tok) then a string comparison).
func BenchmarkTokenHash(b *testing.B) {
	tok := strings.Repeat("t", 700)
	ath := BodyHash([]byte(tok))
	b.ReportAllocs()
	for b.Loop() {
		if !hashMatches(ath, sumString(tok)) {
			b.Fatal("ath does not match")
		}
	}
}

// BenchmarkDecodeClaims decodes a typical proof payload the way VerifyProof
// does (compare DecodeStrict/payload, the generic decoder it used).
func BenchmarkDecodeClaims(b *testing.B) {
	_, payload := benchProofJSON(b)
	seg := base64.RawURLEncoding.EncodeToString(payload)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := decodeClaims(seg); err != nil {
			b.Fatal(err)
		}
	}
}
