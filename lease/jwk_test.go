package lease_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
)

// rfc7517A1 is the P-256 public key of RFC 7517 Appendix A.1.
func rfc7517A1() lease.ECJWK {
	return lease.ECJWK{Kty: "EC", Crv: "P-256",
		X: "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
		Y: "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
}

func TestThumbprint(t *testing.T) {
	k := rfc7517A1()
	// SHA-256 over {"crv":"P-256","kty":"EC","x":"MKBC…","y":"4Etl…"},
	// computed independently (Python hashlib).
	const want = "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
	if got := lease.Thumbprint(k); got != want {
		t.Errorf("Thumbprint(RFC 7517 A.1) = %s, want %s", got, want)
	}
	for _, name := range []string{"rfc7517_a1", "random"} {
		t.Run("go-jose/"+name, func(t *testing.T) {
			if name == "random" {
				k = leasetest.NewAgentKey().ECJWK()
			}
			pt := append([]byte{4}, mustB64(t, k.X)...)
			pt = append(pt, mustB64(t, k.Y)...)
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
			if err != nil {
				t.Fatal(err)
			}
			tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := lease.Thumbprint(k), base64.RawURLEncoding.EncodeToString(tp); got != want {
				t.Errorf("Thumbprint(%s) = %s, want go-jose's %s", name, got, want)
			}
		})
	}
}

func TestBodyHash(t *testing.T) {
	const empty = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
	for _, b := range [][]byte{nil, {}} {
		if got := lease.BodyHash(b); got != empty {
			t.Errorf("BodyHash(%q) = %s, want %s", b, got, empty)
		}
	}
}

func TestParseAgentJWK(t *testing.T) {
	k := rfc7517A1()
	obj := func(mod func(m map[string]any)) string {
		m := map[string]any{"kty": k.Kty, "crv": k.Crv, "x": k.X, "y": k.Y}
		mod(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"ok", obj(func(map[string]any) {}), true},
		{"ok/extra_public_members", obj(func(m map[string]any) { m["use"] = "sig"; m["key_ops"] = []string{"verify"} }), true},
		{"fail/d", obj(func(m map[string]any) { m["d"] = "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE" }), false},
		{"fail/k", obj(func(m map[string]any) { m["k"] = "AAAA" }), false},
		{"fail/kty_RSA", obj(func(m map[string]any) { m["kty"] = "RSA" }), false},
		{"fail/kty_lower", obj(func(m map[string]any) { m["kty"] = "ec" }), false},
		{"fail/crv_P-384", obj(func(m map[string]any) { m["crv"] = "P-384" }), false},
		{"fail/missing_x", obj(func(m map[string]any) { delete(m, "x") }), false},
		{"fail/x_number", obj(func(m map[string]any) { m["x"] = 1 }), false},
		{"fail/x_42", obj(func(m map[string]any) { m["x"] = k.X[:42] }), false},
		{"fail/x_44", obj(func(m map[string]any) { m["x"] = k.X + "A" }), false},
		{"fail/x_padded", obj(func(m map[string]any) { m["x"] = k.X[:42] + "=" }), false},
		{"fail/x_std_alphabet", obj(func(m map[string]any) { m["x"] = strings.Repeat("+", 43) }), false},
		{"fail/not_on_curve", obj(func(m map[string]any) { m["y"] = k.X }), false},
		{"fail/duplicate_member", `{"kty":"EC","kty":"EC","crv":"P-256","x":"` + k.X + `","y":"` + k.Y + `"}`, false},
		{"fail/array", `[1]`, false},
		{"fail/empty", ``, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := lease.ParseAgentJWK(json.RawMessage(c.in))
			if c.ok {
				if err != nil || got != k {
					t.Errorf("ParseAgentJWK(%s) = %+v, %v; want %+v", c.in, got, err, k)
				}
				return
			}
			if !errors.Is(err, lease.ErrBadJWK) {
				t.Errorf("ParseAgentJWK(%s) = %+v, %v; want ErrBadJWK", c.in, got, err)
			}
		})
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
