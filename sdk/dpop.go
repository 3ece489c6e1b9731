package sdk

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// dpopKey is an ephemeral P-256 key and its public JWK (PROTOCOL.md §2.1).
type dpopKey struct {
	priv *ecdsa.PrivateKey
	jwk  publicJWK
	jkt  string // RFC 7638 thumbprint of jwk
	hdr  string // base64url of the proof header, fixed per key
}

// publicJWK is an EC public key as sent in dpop_jwk and the proof header.
type publicJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sha256B64 is base64url-no-pad(SHA-256(b)), used for ath, bh and thumbprints.
func sha256B64(b []byte) string {
	sum := sha256.Sum256(b)
	return b64(sum[:])
}

// newDPoPKey generates a fresh P-256 key.
func newDPoPKey() (*dpopKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("latchgate: generate dpop key: %w", err)
	}
	return dpopKeyFrom(priv)
}

// dpopKeyFrom wraps an existing P-256 key.
func dpopKeyFrom(priv *ecdsa.PrivateKey) (*dpopKey, error) {
	raw, err := priv.PublicKey.Bytes() // 0x04 || X(32) || Y(32)
	if err != nil || len(raw) != 65 {
		return nil, fmt.Errorf("latchgate: dpop key is not P-256: %v", err)
	}
	j := publicJWK{Kty: "EC", Crv: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:65])}
	hdr, err := json.Marshal(struct {
		Typ string    `json:"typ"`
		Alg string    `json:"alg"`
		JWK publicJWK `json:"jwk"`
	}{"dpop+jwt", "ES256", j})
	if err != nil {
		return nil, err
	}
	return &dpopKey{priv: priv, jwk: j, jkt: ecThumbprint(j), hdr: b64(hdr)}, nil
}

// ecThumbprint is the RFC 7638 thumbprint of a P-256 JWK.
func ecThumbprint(j publicJWK) string {
	return sha256B64([]byte(`{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`))
}

// proofClaims are the DPoP proof claims the SDK always sends.
type proofClaims struct {
	JTI string `json:"jti"`
	HTM string `json:"htm"`
	HTU string `json:"htu"`
	IAT int64  `json:"iat"`
	ATH string `json:"ath"`
	BH  string `json:"bh"`
}

// proof returns a fresh compact-JWS DPoP proof for one request.
func (k *dpopKey) proof(method, htu string, now time.Time, leaseJWT string, body []byte) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims, err := json.Marshal(proofClaims{
		JTI: b64(jti), HTM: method, HTU: htu, IAT: now.Unix(),
		ATH: sha256B64([]byte(leaseJWT)), BH: sha256B64(body),
	})
	if err != nil {
		return "", err
	}
	input := k.hdr + "." + b64(claims)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, digest[:])
	if err != nil {
		return "", fmt.Errorf("latchgate: sign dpop proof: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

// normalizeHTU applies PROTOCOL.md §1.1: drop "#…" then "?…"; lowercase the
// scheme and authority; keep the path as-is; empty path → "/"; remove the
// default port, found at the last ':' so IPv6 literals work.
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
	auth, path := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		auth, path = rest[:i], rest[i:]
	}
	auth = strings.ToLower(auth)
	if i := strings.LastIndexByte(auth, ':'); i >= 0 && i > strings.LastIndexByte(auth, ']') {
		port := auth[i+1:]
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			auth = auth[:i]
		}
	}
	return scheme + "://" + auth + path
}
