package lease

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
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
func (a *Authority) VerifyProof(r ProofRequest) (*Proof, error) {
	if len(r.Proof) > MaxProofLen {
		return nil, proofErr(ReasonTooLarge, nil)
	}
	parts := strings.Split(r.Proof, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, proofErr(ReasonMalformed, errors.New("want three non-empty parts"))
	}
	hdr, err := decodeSegment(parts[0])
	if err != nil {
		return nil, segmentErr(err)
	}
	pub, jwk, err := checkProofHeader(hdr)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(Thumbprint(jwk)), []byte(r.JKT)) != 1 {
		return nil, proofErr(ReasonJKTMismatch, nil)
	}
	if err := verifyES256(pub, parts[0], parts[1], parts[2]); err != nil {
		return nil, err
	}
	payload, err := decodeSegment(parts[1])
	if err != nil {
		return nil, segmentErr(err)
	}
	return a.checkProofClaims(payload, r)
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
		return nil, errors.New("not a JSON object")
	}
	return obj, nil
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

// verifyES256 checks a raw 64-byte r||s ES256 signature over "header.payload".
func verifyES256(pub *ecdsa.PublicKey, hdr, payload, sig string) error {
	var raw [64]byte
	if err := decodeB64Into(raw[:], sig); err != nil {
		return proofErr(ReasonBadSignature, err)
	}
	h := sha256.New()
	h.Write([]byte(hdr))
	h.Write([]byte{'.'})
	h.Write([]byte(payload))
	rr := new(big.Int).SetBytes(raw[:32])
	ss := new(big.Int).SetBytes(raw[32:])
	if !ecdsa.Verify(pub, h.Sum(nil), rr, ss) {
		return proofErr(ReasonBadSignature, nil)
	}
	return nil
}

// checkProofClaims applies the claim rules in the table's order.
func (a *Authority) checkProofClaims(c map[string]any, r ProofRequest) (*Proof, error) {
	jtiV, ok := c["jti"]
	if !ok {
		return nil, proofErr(ReasonMissingJTI, nil)
	}
	jti, ok := jtiV.(string)
	if !ok || !validJTI(jti) {
		return nil, proofErr(ReasonBadJTI, nil)
	}
	if htm, ok := c["htm"].(string); !ok || htm != r.Method || htm != strings.ToUpper(htm) {
		return nil, proofErr(ReasonBadHTM, nil)
	}
	if htu, ok := c["htu"].(string); !ok || NormalizeHTU(htu) != NormalizeHTU(r.HTU) {
		return nil, proofErr(ReasonBadHTU, nil)
	}
	iatV, ok := c["iat"]
	if !ok {
		return nil, proofErr(ReasonMissingIAT, nil)
	}
	iatN, ok := iatV.(json.Number)
	if !ok {
		return nil, proofErr(ReasonBadIAT, errors.New("not a number"))
	}
	secs, err := strconv.ParseInt(string(iatN), 10, 64)
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
	athV, ok := c["ath"]
	if !ok {
		return nil, proofErr(ReasonMissingATH, nil)
	}
	if ath, ok := athV.(string); !ok || subtle.ConstantTimeCompare([]byte(ath), []byte(tokenHash(r.LeaseToken))) != 1 {
		return nil, proofErr(ReasonBadATH, nil)
	}
	bhV, ok := c["bh"]
	switch {
	case ok:
		if bh, ok := bhV.(string); !ok || subtle.ConstantTimeCompare([]byte(bh), []byte(BodyHash(r.Body))) != 1 {
			return nil, proofErr(ReasonBadBH, nil)
		}
	case a.cfg.RequireBodyHash:
		return nil, proofErr(ReasonMissingBH, nil)
	}
	return &Proof{
		JTI:             jti,
		IssuedAt:        iat,
		JKT:             r.JKT,
		ReplayExpiresAt: iat.Add(a.cfg.ProofMaxAge + 2*a.cfg.ProofFutureSkew),
	}, nil
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
