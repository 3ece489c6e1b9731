// Package leasetest makes DPoP proofs for tests and SDKs: an agent key, its
// JWK and thumbprint, and a proof maker whose every header member and claim
// can be overridden, so tests can craft each bad proof the gate must refuse.
//
// It holds private keys in memory only and never verifies anything; it is
// test support, not part of the gate. The API is internal to this module and
// may change.
package leasetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/lease"
)

// AgentKey is an agent's P-256 DPoP key.
type AgentKey struct {
	// Clock gives the default iat of proofs. NewAgentKey sets clock.Real{}.
	Clock clock.Clock

	priv *ecdsa.PrivateKey
	jwk  lease.ECJWK
}

// NewAgentKey generates a key. It panics if the system has no randomness.
func NewAgentKey() *AgentKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("leasetest: generate key: %v", err))
	}
	return FromPrivateKey(priv)
}

// FromPrivateKey wraps an existing P-256 key.
func FromPrivateKey(priv *ecdsa.PrivateKey) *AgentKey {
	b, err := priv.PublicKey.Bytes()
	if err != nil || len(b) != 65 {
		panic(fmt.Sprintf("leasetest: not a P-256 key: %v", err))
	}
	return &AgentKey{
		Clock: clock.Real{},
		priv:  priv,
		jwk: lease.ECJWK{
			Kty: "EC",
			Crv: "P-256",
			X:   base64.RawURLEncoding.EncodeToString(b[1:33]),
			Y:   base64.RawURLEncoding.EncodeToString(b[33:]),
		},
	}
}

// ECJWK returns the public key as a lease.ECJWK.
func (k *AgentKey) ECJWK() lease.ECJWK { return k.jwk }

// JWK returns the public key as {"kty","crv","x","y"} JSON (the dpop_jwk of
// POST /v1/leases).
func (k *AgentKey) JWK() json.RawMessage {
	b, err := json.Marshal(k.jwk)
	if err != nil {
		panic(err)
	}
	return b
}

// Thumbprint returns the key's RFC 7638 thumbprint (the lease's cnf.jkt).
func (k *AgentKey) Thumbprint() string { return lease.Thumbprint(k.jwk) }

// proofSpec is what a Proof call will encode.
type proofSpec struct {
	header     map[string]any
	claims     map[string]any
	rawHeader  []byte
	rawPayload []byte
	signer     *AgentKey
	signature  *string
}

// ProofOption changes one aspect of a proof.
type ProofOption func(*proofSpec)

// WithHeader sets header member name to value (any JSON-encodable value).
func WithHeader(name string, value any) ProofOption {
	return func(s *proofSpec) { s.header[name] = value }
}

// WithoutHeader removes header member name.
func WithoutHeader(name string) ProofOption {
	return func(s *proofSpec) { delete(s.header, name) }
}

// WithClaim sets claim name to value (any JSON-encodable value, e.g. a
// string iat or json.Number("1.5")).
func WithClaim(name string, value any) ProofOption {
	return func(s *proofSpec) { s.claims[name] = value }
}

// WithoutClaim removes claim name.
func WithoutClaim(name string) ProofOption {
	return func(s *proofSpec) { delete(s.claims, name) }
}

// WithTyp sets the typ header.
func WithTyp(typ string) ProofOption { return WithHeader("typ", typ) }

// WithAlg sets the alg header (the proof is still signed with ES256).
func WithAlg(alg string) ProofOption { return WithHeader("alg", alg) }

// WithJTI sets the jti claim.
func WithJTI(jti string) ProofOption { return WithClaim("jti", jti) }

// WithIAT sets the iat claim to unix seconds.
func WithIAT(unix int64) ProofOption { return WithClaim("iat", unix) }

// WithBH sets the bh claim.
func WithBH(bh string) ProofOption { return WithClaim("bh", bh) }

// WithoutATH removes the ath claim.
func WithoutATH() ProofOption { return WithoutClaim("ath") }

// WithoutBH removes the bh claim.
func WithoutBH() ProofOption { return WithoutClaim("bh") }

// WithRawHeader replaces the encoded header JSON with raw bytes (for
// duplicate members, non-objects, invalid JSON).
func WithRawHeader(raw string) ProofOption {
	return func(s *proofSpec) { s.rawHeader = []byte(raw) }
}

// WithRawPayload replaces the encoded claims JSON with raw bytes.
func WithRawPayload(raw string) ProofOption {
	return func(s *proofSpec) { s.rawPayload = []byte(raw) }
}

// SignedBy signs the proof with other while the header keeps this key's jwk.
func SignedBy(other *AgentKey) ProofOption {
	return func(s *proofSpec) { s.signer = other }
}

// WithSignature replaces the encoded signature segment.
func WithSignature(sig string) ProofOption {
	return func(s *proofSpec) { s.signature = &sig }
}

// Proof returns a compact DPoP proof for method and htu bound to leaseToken
// and body. By default: header {typ:"dpop+jwt", alg:"ES256", jwk}; claims
// jti (22 random base64url chars), htm, htu, iat (k.Clock), ath and bh.
func (k *AgentKey) Proof(method, htu, leaseToken string, body []byte, opts ...ProofOption) string {
	ath := sha256.Sum256([]byte(leaseToken))
	s := &proofSpec{
		header: map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": k.jwk},
		claims: map[string]any{
			"jti": randomID(),
			"htm": method,
			"htu": htu,
			"iat": k.Clock.Now().Unix(),
			"ath": base64.RawURLEncoding.EncodeToString(ath[:]),
			"bh":  lease.BodyHash(body),
		},
		signer: k,
	}
	for _, o := range opts {
		o(s)
	}
	hdr, payload := s.rawHeader, s.rawPayload
	if hdr == nil {
		hdr = mustJSON(s.header)
	}
	if payload == nil {
		payload = mustJSON(s.claims)
	}
	signingInput := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(payload)
	if s.signature != nil {
		return signingInput + "." + *s.signature
	}
	return signingInput + "." + s.signer.sign(signingInput)
}

// SignRaw returns header.payload.signature for raw header and payload JSON,
// signed with k (ES256, raw r||s).
func (k *AgentKey) SignRaw(header, payload []byte) string {
	in := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	return in + "." + k.sign(in)
}

// sign returns the base64url ES256 signature of signingInput.
func (k *AgentKey) sign(signingInput string) string {
	sum := sha256.Sum256([]byte(signingInput))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, sum[:])
	if err != nil {
		panic(fmt.Sprintf("leasetest: sign: %v", err))
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return base64.RawURLEncoding.EncodeToString(sig[:])
}

// randomID returns 16 random bytes as base64url (22 characters).
func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("leasetest: random: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// mustJSON encodes v, panicking on failure (test support).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("leasetest: encode: %v", err))
	}
	return b
}
