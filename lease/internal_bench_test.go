package lease

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
		"iat": 1777636800, "ath": tokenHash(strings.Repeat("t", 700)), "bh": BodyHash([]byte(`{"msg":"hi"}`)),
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

func BenchmarkTokenHash(b *testing.B) {
	tok := strings.Repeat("t", 700)
	b.ReportAllocs()
	for b.Loop() {
		_ = tokenHash(tok)
	}
}
