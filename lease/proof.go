package lease

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// MaxProofLen is the largest DPoP proof accepted (PROTOCOL §2.1).
const MaxProofLen = 4 << 10

// Proof deny reasons (PROTOCOL §2.1 deny_reason values), one per check.
const (
	ReasonTooLarge        = "too_large"
	ReasonMalformed       = "malformed"
	ReasonDuplicateMember = "duplicate_member"
	ReasonBadTyp          = "bad_typ"
	ReasonBadAlg          = "bad_alg"
	ReasonForbiddenHeader = "forbidden_header"
	ReasonBadJWK          = "bad_jwk"
	ReasonJKTMismatch     = "jkt_mismatch"
	ReasonBadSignature    = "bad_signature"
	ReasonMissingJTI      = "missing_jti"
	ReasonBadJTI          = "bad_jti"
	ReasonBadHTM          = "bad_htm"
	ReasonBadHTU          = "bad_htu"
	ReasonMissingIAT      = "missing_iat"
	ReasonBadIAT          = "bad_iat"
	ReasonIATTooOld       = "iat_too_old"
	ReasonIATInFuture     = "iat_in_future"
	ReasonMissingATH      = "missing_ath"
	ReasonBadATH          = "bad_ath"
	ReasonMissingBH       = "missing_bh"
	ReasonBadBH           = "bad_bh"
)

// forbiddenProofHeaders are header members a proof must not carry: they name
// keys by reference or add critical extensions (PROTOCOL §2.1).
var forbiddenProofHeaders = [...]string{"kid", "jku", "x5c", "x5u", "x5t", "x5t#S256", "crit"}

// ErrProofInvalid is matched (errors.Is) by every *ProofError.
var ErrProofInvalid = errors.New("lease: invalid dpop proof")

// ProofError is a refused DPoP proof. Reason is the deny_reason (one of the
// Reason* constants); the gate answers 401 invalid_dpop with it.
type ProofError struct {
	Reason string
	Err    error // internal detail, for logs only; may be nil
}

// Error implements error.
func (e *ProofError) Error() string {
	if e.Err != nil {
		return "lease: invalid dpop proof: " + e.Reason + ": " + e.Err.Error()
	}
	return "lease: invalid dpop proof: " + e.Reason
}

// Unwrap returns the internal detail.
func (e *ProofError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrProofInvalid) true.
func (e *ProofError) Is(target error) bool { return target == ErrProofInvalid }

// proofErr builds a *ProofError.
func proofErr(reason string, err error) error { return &ProofError{Reason: reason, Err: err} }

// ProofRequest is what a proof is checked against.
type ProofRequest struct {
	Proof      string // the DPoP header value
	Method     string // the request's method, as received
	HTU        string // the expected htu (NormalizeHTU is applied again)
	LeaseToken string // the lease JWT exactly as sent, for ath
	Body       []byte // the raw request body, for bh
	JKT        string // the lease's cnf.jkt
}

// Proof is an accepted proof. The caller still inserts (JKT, JTI) in the
// replay cache until ReplayExpiresAt.
type Proof struct {
	JTI             string
	IssuedAt        time.Time
	JKT             string
	ReplayExpiresAt time.Time // iat + ProofMaxAge + 2·ProofFutureSkew
}

// VerifyProof checks a DPoP proof in the order of PROTOCOL §2.1: size, three
// parts, header (JSON object without duplicate members; typ dpop+jwt; alg
// ES256; no kid/jku/x5c/x5u/x5t/crit; jwk a public P-256 key), the jwk's
// thumbprint equals r.JKT, the raw r||s signature, then the claims jti, htm,
// htu, iat, ath, bh. A refusal is a *ProofError naming the failed check.
//
// A header segment that passed every header rule and whose key then verified
// the signature is cached (byte for byte, bounded, see headerCache) with the
// key it names, so the same header is not decoded again; the thumbprint
// comparison, the signature and the claims are checked on every proof.
func (a *Authority) VerifyProof(r ProofRequest) (*Proof, error) {
	if len(r.Proof) > MaxProofLen {
		return nil, proofErr(ReasonTooLarge, nil)
	}
	hdr, payload, sig, ok := splitCompact(r.Proof)
	if !ok {
		return nil, proofErr(ReasonMalformed, errors.New("want three non-empty parts"))
	}
	key := a.headers.get(hdr)
	cached := key != nil
	if !cached {
		var err error
		if key, err = proofKeyOf(hdr); err != nil {
			return nil, err
		}
	}
	if !constantTimeEqual(key.jkt, r.JKT) {
		return nil, proofErr(ReasonJKTMismatch, nil)
	}
	if err := verifyES256(key.pub, r.Proof[:len(hdr)+1+len(payload)], sig); err != nil {
		return nil, err
	}
	if !cached {
		a.headers.add(hdr, key)
	}
	claims, err := decodeClaims(payload)
	if err != nil {
		return nil, segmentErr(err)
	}
	return a.checkProofClaims(&claims, r)
}

// splitCompact splits a compact JWS into its three parts; ok is false unless
// there are exactly three, none of them empty.
func splitCompact(s string) (hdr, payload, sig string, ok bool) {
	hdr, rest, ok1 := strings.Cut(s, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(sig, '.') >= 0 || hdr == "" || payload == "" || sig == "" {
		return "", "", "", false
	}
	return hdr, payload, sig, true
}

// proofKeyOf decodes a proof's header segment, applies the header rules and
// returns the key it names.
func proofKeyOf(seg string) (*proofKey, error) {
	hdr, err := decodeSegment(seg)
	if err != nil {
		return nil, segmentErr(err)
	}
	pub, jwk, err := checkProofHeader(hdr)
	if err != nil {
		return nil, err
	}
	return &proofKey{pub: pub, jwk: jwk, jkt: Thumbprint(jwk)}, nil
}

// decodeSegment decodes a base64url-no-pad JWS segment and its JSON object.
func decodeSegment(seg string) (map[string]any, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	v, err := decodeStrict(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errNotObject
	}
	return obj, nil
}

// proofClaims are the payload members checkProofClaims reads.
type proofClaims struct {
	jti, htm, htu, iat, ath, bh strictMember
}

// decodeClaims decodes a proof's payload segment as strictly as
// decodeSegment, keeping only the members checkProofClaims reads.
func decodeClaims(seg string) (proofClaims, error) {
	var c proofClaims
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return c, errors.New("not base64url")
	}
	picks := [...]strictPick{
		{"jti", &c.jti}, {"htm", &c.htm}, {"htu", &c.htu}, {"iat", &c.iat}, {"ath", &c.ath}, {"bh", &c.bh},
	}
	err = decodeStrictMembers(raw, picks[:])
	return c, err
}

// segmentErr maps a decodeSegment error to its proof error.
func segmentErr(err error) error {
	if errors.Is(err, errDuplicateMember) {
		return proofErr(ReasonDuplicateMember, err)
	}
	return proofErr(ReasonMalformed, err)
}

// checkProofHeader applies the header rules and returns the proof's key.
func checkProofHeader(h map[string]any) (*ecdsa.PublicKey, ECJWK, error) {
	if typ, _ := h["typ"].(string); typ != "dpop+jwt" {
		return nil, ECJWK{}, proofErr(ReasonBadTyp, nil)
	}
	if alg, _ := h["alg"].(string); alg != "ES256" {
		return nil, ECJWK{}, proofErr(ReasonBadAlg, nil)
	}
	for _, m := range forbiddenProofHeaders {
		if _, ok := h[m]; ok {
			return nil, ECJWK{}, proofErr(ReasonForbiddenHeader, errors.New(m))
		}
	}
	obj, ok := h["jwk"].(map[string]any)
	if !ok {
		return nil, ECJWK{}, proofErr(ReasonBadJWK, errors.New("missing or not an object"))
	}
	jwk, pub, err := jwkFromObject(obj)
	if err != nil {
		return nil, ECJWK{}, proofErr(ReasonBadJWK, err)
	}
	return pub, jwk, nil
}

// verifyES256 checks a raw 64-byte r||s ES256 signature over signingInput
// ("header.payload"). Like ecdsa.Verify it refuses r or s outside [1, n-1]
// and accepts either s of a pair (low S is not required).
func verifyES256(pub *ecdsa.PublicKey, signingInput, sig string) error {
	var raw [64]byte
	if err := decodeB64Into(raw[:], sig); err != nil {
		return proofErr(ReasonBadSignature, err)
	}
	der, ok := signatureDER(&raw)
	if !ok {
		return proofErr(ReasonBadSignature, nil)
	}
	sum := sumString(signingInput)
	if !ecdsa.VerifyASN1(pub, sum[:], der) {
		return proofErr(ReasonBadSignature, nil)
	}
	return nil
}

// signatureDER returns raw r||s as the DER ECDSA-Sig-Value that ecdsa.Verify
// builds from r and s before checking it, or false when r or s is zero
// (ecdsa.Verify refuses those before encoding).
func signatureDER(raw *[64]byte) ([]byte, bool) {
	r := bytes.TrimLeft(raw[:32], "\x00")
	s := bytes.TrimLeft(raw[32:], "\x00")
	if len(r) == 0 || len(s) == 0 {
		return nil, false
	}
	der := make([]byte, 2, 2+2*(2+33))
	der[0] = 0x30 // SEQUENCE
	for _, n := range [2][]byte{r, s} {
		if n[0]&0x80 != 0 {
			der = append(der, 0x02, byte(len(n)+1), 0) // INTEGER, kept positive
		} else {
			der = append(der, 0x02, byte(len(n)))
		}
		der = append(der, n...)
	}
	der[1] = byte(len(der) - 2)
	return der, true
}

// checkProofClaims applies the claim rules in the table's order.
func (a *Authority) checkProofClaims(c *proofClaims, r ProofRequest) (*Proof, error) {
	if c.jti.kind == 0 {
		return nil, proofErr(ReasonMissingJTI, nil)
	}
	jti := c.jti.text
	if c.jti.kind != '"' || !validJTI(jti) {
		return nil, proofErr(ReasonBadJTI, nil)
	}
	if htm := c.htm.text; c.htm.kind != '"' || htm != r.Method || htm != strings.ToUpper(htm) {
		return nil, proofErr(ReasonBadHTM, nil)
	}
	if c.htu.kind != '"' || !sameHTU(c.htu.text, r.HTU) {
		return nil, proofErr(ReasonBadHTU, nil)
	}
	if c.iat.kind == 0 {
		return nil, proofErr(ReasonMissingIAT, nil)
	}
	if c.iat.kind != '0' {
		return nil, proofErr(ReasonBadIAT, errors.New("not a number"))
	}
	secs, err := strconv.ParseInt(c.iat.text, 10, 64)
	if err != nil || secs < 0 {
		return nil, proofErr(ReasonBadIAT, errors.New("not a non-negative integer"))
	}
	iat := time.Unix(secs, 0).UTC()
	now := a.clk.Now()
	if iat.Before(now.Add(-a.cfg.ProofMaxAge)) {
		return nil, proofErr(ReasonIATTooOld, nil)
	}
	if iat.After(now.Add(a.cfg.ProofFutureSkew)) {
		return nil, proofErr(ReasonIATInFuture, nil)
	}
	if c.ath.kind == 0 {
		return nil, proofErr(ReasonMissingATH, nil)
	}
	if c.ath.kind != '"' || !hashMatches(c.ath.text, sumString(r.LeaseToken)) {
		return nil, proofErr(ReasonBadATH, nil)
	}
	switch {
	case c.bh.kind != 0:
		if c.bh.kind != '"' || !hashMatches(c.bh.text, sha256.Sum256(r.Body)) {
			return nil, proofErr(ReasonBadBH, nil)
		}
	case a.cfg.RequireBodyHash:
		return nil, proofErr(ReasonMissingBH, nil)
	}
	return &Proof{
		JTI:             strings.Clone(jti), // jti is part of the whole decoded payload
		IssuedAt:        iat,
		JKT:             r.JKT,
		ReplayExpiresAt: iat.Add(a.cfg.ProofMaxAge + 2*a.cfg.ProofFutureSkew),
	}, nil
}

// sumString returns the SHA-256 of s. It hashes s through a small buffer on
// the stack, so s is not copied to the heap as sha256.Sum256([]byte(s))
// would copy it.
func sumString(s string) [sha256.Size]byte {
	h := sha256.New()
	var buf [256]byte
	for s != "" {
		n := copy(buf[:], s)
		h.Write(buf[:n])
		s = s[n:]
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// hashMatches reports, in constant time, whether b64 is the base64url-no-pad
// encoding of sum (the form of ath and bh).
func hashMatches(b64 string, sum [sha256.Size]byte) bool {
	var want, got [43]byte // base64url-no-pad of 32 bytes
	if len(b64) != len(got) {
		return false
	}
	base64.RawURLEncoding.Encode(want[:], sum[:])
	copy(got[:], b64)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// constantTimeEqual reports whether a == b in time that depends only on
// their lengths. Short strings are compared from stack copies.
func constantTimeEqual(a, b string) bool {
	var ab, bb [64]byte
	if len(a) > len(ab) || len(b) > len(bb) {
		return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
	}
	return subtle.ConstantTimeCompare(ab[:copy(ab[:], a)], bb[:copy(bb[:], b)]) == 1
}

// validJTI reports whether jti is 8–128 printable ASCII characters (it ends up
// in store keys and logs).
func validJTI(jti string) bool {
	if len(jti) < 8 || len(jti) > 128 {
		return false
	}
	for i := 0; i < len(jti); i++ {
		if jti[i] < 0x21 || jti[i] > 0x7e {
			return false
		}
	}
	return true
}
