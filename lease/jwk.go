package lease

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// coordLen is the length of a P-256 coordinate in base64url without padding
// (32 bytes).
const coordLen = 43

// ErrBadJWK reports an agent key that is not exactly a public P-256 EC JWK.
var ErrBadJWK = errors.New("lease: bad jwk")

// privateJWKMembers are JWK members that carry private key material (RFC 7518
// §6.2.2, §6.3.2, §6.4). A key carrying any of them is refused.
var privateJWKMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ECJWK is a public P-256 key as a JWK. Only values returned by ParseAgentJWK
// (or built from a real key) are meaningful to Thumbprint.
type ECJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// Thumbprint returns the RFC 7638 thumbprint of k: base64url-no-pad SHA-256
// over {"crv":…,"kty":…,"x":…,"y":…} (those members, that order, no spaces).
// k must be validated (ParseAgentJWK): its members are not escaped here.
func Thumbprint(k ECJWK) string {
	b := make([]byte, 0, 128)
	b = append(b, `{"crv":"`...)
	b = append(b, k.Crv...)
	b = append(b, `","kty":"`...)
	b = append(b, k.Kty...)
	b = append(b, `","x":"`...)
	b = append(b, k.X...)
	b = append(b, `","y":"`...)
	b = append(b, k.Y...)
	b = append(b, `"}`...)
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// BodyHash returns base64url-no-pad(SHA-256(body)), the DPoP "bh" value. An
// empty or nil body hashes the empty string.
func BodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ParseAgentJWK parses the dpop_jwk of POST /v1/leases. It must be a JSON
// object without duplicate members whose kty is "EC", crv "P-256", x and y 43
// base64url characters each naming a point on the curve, and which carries no
// private member (d, …). Other public members (use, alg, key_ops, ext, kid) are
// ignored; they take no part in the thumbprint. Errors wrap ErrBadJWK.
func ParseAgentJWK(raw json.RawMessage) (ECJWK, error) {
	v, err := decodeStrict(raw)
	if err != nil {
		return ECJWK{}, fmt.Errorf("%w: %w", ErrBadJWK, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return ECJWK{}, fmt.Errorf("%w: not a JSON object", ErrBadJWK)
	}
	k, _, err := jwkFromObject(obj)
	return k, err
}

// jwkFromObject checks a decoded JWK object and returns it with its public key.
// Errors wrap ErrBadJWK.
func jwkFromObject(obj map[string]any) (ECJWK, *ecdsa.PublicKey, error) {
	for _, m := range privateJWKMembers {
		if _, ok := obj[m]; ok {
			return ECJWK{}, nil, fmt.Errorf("%w: carries private member %q", ErrBadJWK, m)
		}
	}
	var k ECJWK
	for _, f := range []struct {
		name string
		dst  *string
	}{{"kty", &k.Kty}, {"crv", &k.Crv}, {"x", &k.X}, {"y", &k.Y}} {
		s, ok := obj[f.name].(string)
		if !ok {
			return ECJWK{}, nil, fmt.Errorf("%w: %q missing or not a string", ErrBadJWK, f.name)
		}
		*f.dst = s
	}
	if k.Kty != "EC" || k.Crv != "P-256" {
		return ECJWK{}, nil, fmt.Errorf("%w: want kty EC and crv P-256", ErrBadJWK)
	}
	pub, err := publicKey(k.X, k.Y)
	if err != nil {
		return ECJWK{}, nil, err
	}
	return k, pub, nil
}

// publicKey decodes base64url coordinates into a P-256 public key, checking
// their length and that the point is on the curve. Errors wrap ErrBadJWK.
func publicKey(x, y string) (*ecdsa.PublicKey, error) {
	if len(x) != coordLen || len(y) != coordLen {
		return nil, fmt.Errorf("%w: x and y must be %d base64url characters", ErrBadJWK, coordLen)
	}
	pt := make([]byte, 65)
	pt[0] = 4
	if err := decodeB64Into(pt[1:33], x); err != nil {
		return nil, fmt.Errorf("%w: x: %w", ErrBadJWK, err)
	}
	if err := decodeB64Into(pt[33:], y); err != nil {
		return nil, fmt.Errorf("%w: y: %w", ErrBadJWK, err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		return nil, fmt.Errorf("%w: not a point on P-256", ErrBadJWK)
	}
	return pub, nil
}

// decodeB64Into decodes strict base64url-no-pad s into exactly len(dst) bytes.
func decodeB64Into(dst []byte, s string) error {
	enc := base64.RawURLEncoding.Strict()
	if enc.DecodedLen(len(s)) != len(dst) {
		return errors.New("wrong length")
	}
	var buf [88]byte // base64 of 64 bytes, the longest decoded here
	src := buf[:copy(buf[:], s)]
	if len(s) > len(buf) {
		src = []byte(s)
	}
	n, err := enc.Decode(dst, src)
	if err != nil {
		return errors.New("not base64url")
	}
	if n != len(dst) {
		return errors.New("wrong length")
	}
	return nil
}

// jwkOf returns the public JWK of a P-256 key.
func jwkOf(pub *ecdsa.PublicKey) (ECJWK, error) {
	b, err := pub.Bytes()
	if err != nil || len(b) != 65 {
		return ECJWK{}, fmt.Errorf("lease: encode public key: %v", err)
	}
	return ECJWK{
		Kty: "EC",
		Crv: "P-256",
		X:   base64.RawURLEncoding.EncodeToString(b[1:33]),
		Y:   base64.RawURLEncoding.EncodeToString(b[33:]),
	}, nil
}
