package leasetest_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
)

func TestAgentKey(t *testing.T) {
	k := leasetest.NewAgentKey()
	parsed, err := lease.ParseAgentJWK(k.JWK())
	if err != nil || parsed != k.ECJWK() {
		t.Fatalf("ParseAgentJWK(JWK()) = %+v, %v; want %+v", parsed, err, k.ECJWK())
	}
	if got, want := k.Thumbprint(), lease.Thumbprint(parsed); got != want {
		t.Errorf("Thumbprint() = %s, want %s", got, want)
	}
}

func TestProofOptions(t *testing.T) {
	k := leasetest.NewAgentKey()
	cases := []struct {
		name       string
		opts       []leasetest.ProofOption
		hdr, claim string // member expected present in header / claims
		absent     string // claim expected absent
	}{
		{"default", nil, "jwk", "bh", ""},
		{"without_ath", []leasetest.ProofOption{leasetest.WithoutATH()}, "typ", "jti", "ath"},
		{"extra_header", []leasetest.ProofOption{leasetest.WithHeader("kid", "x")}, "kid", "iat", ""},
		{"without_bh", []leasetest.ProofOption{leasetest.WithoutBH()}, "alg", "htu", "bh"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := strings.Split(k.Proof("POST", "http://localhost/x", "tok", nil, c.opts...), ".")
			if len(p) != 3 {
				t.Fatalf("Proof parts = %d, want 3", len(p))
			}
			var hdr, claims map[string]any
			decode(t, p[0], &hdr)
			decode(t, p[1], &claims)
			if _, ok := hdr[c.hdr]; !ok {
				t.Errorf("Proof header = %v, want member %s", hdr, c.hdr)
			}
			if _, ok := claims[c.claim]; !ok {
				t.Errorf("Proof claims = %v, want member %s", claims, c.claim)
			}
			if _, ok := claims[c.absent]; c.absent != "" && ok {
				t.Errorf("Proof claims = %v, want no %s", claims, c.absent)
			}
		})
	}
}

func decode(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
