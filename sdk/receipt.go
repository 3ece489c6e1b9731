package sdk

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/gowebpki/jcs"
)

// Receipt is a signed record of one dispatched execution (PROTOCOL.md §5).
// The typed fields are for reading; Verify works on Raw, the receipt exactly
// as served.
type Receipt struct {
	ReceiptID            string          `json:"receipt_id"`
	Seq                  int64           `json:"seq"`
	PrevHash             *string         `json:"prev_hash"`
	GateID               string          `json:"gate_id"`
	TraceID              string          `json:"trace_id"`
	GrantID              string          `json:"grant_id"`
	ActionID             string          `json:"action_id"`
	ActionVersion        string          `json:"action_version"`
	ActionDigest         string          `json:"action_digest"`
	ProviderModuleDigest string          `json:"provider_module_digest"`
	Principal            string          `json:"principal"`
	SessionID            string          `json:"session_id"`
	AgentID              string          `json:"agent_id,omitempty"`
	Peer                 *ReceiptPeer    `json:"peer,omitempty"`
	RequestHash          string          `json:"request_hash"`
	ResponseHash         *string         `json:"response_hash"`
	Output               json.RawMessage `json:"output"`
	OutputTruncated      bool            `json:"output_truncated"`
	NormalizedResult     struct {
		Kind    string `json:"kind"` // success, provider_failure, timeout, egress_denied, interrupted, internal_error
		Summary string `json:"summary"`
	} `json:"normalized_result"`
	VerificationOutcome struct {
		Status string `json:"status"` // verified, verification_failed, unverifiable_declared
	} `json:"verification_outcome"`
	Egress struct {
		Hosts []string `json:"hosts"`
	} `json:"egress"`
	Approval        *ReceiptApproval `json:"approval"`
	PolicyVersion   string           `json:"policy_version"`
	StartedAt       string           `json:"started_at"`  // RFC 3339 UTC, ms, as hashed
	FinishedAt      string           `json:"finished_at"` // RFC 3339 UTC, ms, as hashed
	Hash            string           `json:"hash"`
	Signature       string           `json:"signature"`
	KeyID           string           `json:"key_id"`
	SignatureStatus string           `json:"signature_status,omitempty"` // the gate's own check: valid, invalid, unknown_key_id

	// Raw is the receipt as served; Verify hashes it.
	Raw json.RawMessage `json:"-"`
}

// ReceiptPeer is the socket peer that asked for the execution.
type ReceiptPeer struct {
	UID int `json:"uid"`
	PID int `json:"pid"`
}

// ReceiptApproval says who approved a held execution.
type ReceiptApproval struct {
	Kind       string `json:"kind"` // operator or standing
	ApprovalID string `json:"approval_id"`
	ApprovedBy string `json:"approved_by"`
	ApprovedAt string `json:"approved_at"`
}

// IsFullySuccessful reports whether the action succeeded and its declared
// verification passed or there was nothing to verify (PROTOCOL.md §5).
func (r *Receipt) IsFullySuccessful() bool {
	s := r.VerificationOutcome.Status
	return r.NormalizedResult.Kind == "success" && (s == "verified" || s == "unverifiable_declared")
}

// ParseReceipt parses a receipt (JSON as served or stored) for Verify.
func ParseReceipt(data []byte) (*Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	r.Raw = append(json.RawMessage(nil), data...)
	return &r, nil
}

// GetReceipt fetches a receipt of this principal.
func (c *Client) GetReceipt(ctx context.Context, receiptID string) (*Receipt, error) {
	res, err := c.do(ctx, call{method: "GET", path: "/v1/receipts/" + url.PathEscape(receiptID), auth: true, retry: true})
	if err != nil {
		return nil, err
	}
	r, err := ParseReceipt(res.body)
	if err != nil {
		return nil, &Error{Kind: ErrServer, Message: "the gate's receipt is not valid JSON", Err: err}
	}
	return r, nil
}

// ComputeHash returns "sha256:<hex>" of the JCS form of the receipt without
// hash, signature, key_id and signature_status. It refuses a receipt that is
// not I-JSON (duplicate members, lone surrogates).
func (r *Receipt) ComputeHash() (string, error) {
	h, _, err := r.parts()
	return h, err
}

// sealParts are the hash, signature and key_id members as served.
type sealParts struct {
	Hash      string `json:"hash"`
	Signature string `json:"signature"`
	KeyID     string `json:"key_id"`
}

// parts computes the hash of Raw and reads its seal members from Raw (not
// from the typed fields, which a caller may have changed).
func (r *Receipt) parts() (string, sealParts, error) {
	var seal sealParts
	if len(r.Raw) == 0 {
		return "", seal, fmt.Errorf("%w: no raw receipt (use ParseReceipt or GetReceipt)", ErrReceiptMalformed)
	}
	// jcs refuses duplicate members and lone surrogates, so what is hashed is
	// exactly what every verifier (and reader) sees.
	if _, err := CanonicalJSON(r.Raw); err != nil {
		return "", seal, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.Raw, &m); err != nil {
		return "", seal, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	if err := json.Unmarshal(r.Raw, &seal); err != nil {
		return "", seal, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	delete(m, "hash")
	delete(m, "signature")
	delete(m, "key_id")
	delete(m, "signature_status")
	b, err := json.Marshal(m)
	if err != nil {
		return "", seal, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	canon, err := CanonicalJSON(b)
	if err != nil {
		return "", seal, fmt.Errorf("%w: %v", ErrReceiptMalformed, err)
	}
	sum := sha256.Sum256(canon)
	return "sha256:" + hex.EncodeToString(sum[:]), seal, nil
}

// Verify checks the receipt offline: its hash over the JCS form, then the
// Ed25519 signature over the hash with the key named by key_id in keys. It
// does not trust the gate's signature_status. Errors wrap ErrReceiptMalformed,
// ErrReceiptHash, ErrReceiptUnknownKey or ErrReceiptSignature.
func (r *Receipt) Verify(keys KeySet) error {
	h, seal, err := r.parts()
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(seal.Hash)) != 1 {
		return fmt.Errorf("%w: receipt %s", ErrReceiptHash, r.ReceiptID)
	}
	pub, ok := keys.keys[seal.KeyID]
	if !ok {
		return fmt.Errorf("%w: %q", ErrReceiptUnknownKey, seal.KeyID)
	}
	sig, err := base64.RawURLEncoding.DecodeString(seal.Signature)
	if err != nil || !ed25519.Verify(pub, []byte(seal.Hash), sig) {
		return fmt.Errorf("%w: receipt %s", ErrReceiptSignature, r.ReceiptID)
	}
	return nil
}

// VerifyReceipt verifies r against the gate's receipt keys (GET
// /v1/receipt-keys), cached and fetched again once if r names a key not in
// the cache.
func (c *Client) VerifyReceipt(ctx context.Context, r *Receipt) error {
	c.keysMu.Lock()
	ks := c.keys
	c.keysMu.Unlock()
	if ks == nil || !ks.Has(r.KeyID) {
		fresh, err := c.ReceiptKeys(ctx)
		if err != nil {
			return err
		}
		c.keysMu.Lock()
		c.keys = &fresh
		c.keysMu.Unlock()
		ks = &fresh
	}
	return r.Verify(*ks)
}

// KeySet holds receipt verification keys by key id. The zero value is empty.
type KeySet struct {
	keys map[string]ed25519.PublicKey
}

// NewKeySet builds a KeySet; each key's id is its RFC 7638 thumbprint.
func NewKeySet(keys ...ed25519.PublicKey) KeySet {
	ks := KeySet{keys: map[string]ed25519.PublicKey{}}
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize {
			ks.keys[Ed25519KeyID(k)] = append(ed25519.PublicKey(nil), k...)
		}
	}
	return ks
}

// Has reports whether the set holds key id kid.
func (ks KeySet) Has(kid string) bool {
	_, ok := ks.keys[kid]
	return ok
}

// Len is the number of keys.
func (ks KeySet) Len() int { return len(ks.keys) }

// Ed25519KeyID is the RFC 7638 thumbprint of an Ed25519 public key:
// base64url-no-pad(SHA-256(`{"crv":"Ed25519","kty":"OKP","x":"…"}`)).
func Ed25519KeyID(pub ed25519.PublicKey) string {
	return sha256B64([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + b64(pub) + `"}`))
}

// ParseKeySet reads a JWK set ({"keys":[…]}) of Ed25519 keys. Each key's id
// is recomputed from the key; a key whose "kid" disagrees is refused, keys
// of other types are skipped.
func ParseKeySet(data []byte) (KeySet, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return KeySet{}, fmt.Errorf("latchgate: receipt key set: %w", err)
	}
	ks := KeySet{keys: map[string]ed25519.PublicKey{}}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return KeySet{}, errors.New("latchgate: receipt key set: bad Ed25519 x")
		}
		kid := Ed25519KeyID(x)
		if k.Kid != "" && k.Kid != kid {
			return KeySet{}, fmt.Errorf("latchgate: receipt key set: kid %q is not the key's thumbprint %q", k.Kid, kid)
		}
		ks.keys[kid] = x
	}
	return ks, nil
}

// ReceiptKeys fetches the gate's receipt signing keys (GET /v1/receipt-keys).
func (c *Client) ReceiptKeys(ctx context.Context) (KeySet, error) {
	res, err := c.do(ctx, call{method: "GET", path: "/v1/receipt-keys", retry: true})
	if err != nil {
		return KeySet{}, err
	}
	ks, err := ParseKeySet(res.body)
	if err != nil {
		return KeySet{}, &Error{Kind: ErrServer, Message: "the gate's receipt keys are malformed", Err: err}
	}
	return ks, nil
}

// CanonicalJSON returns the RFC 8785 (JCS) form of a JSON text. It refuses
// text that is not I-JSON (duplicate members, lone surrogates, invalid UTF-8,
// numbers out of range). Numbers are IEEE doubles, as JCS requires.
func CanonicalJSON(data []byte) ([]byte, error) {
	return jcs.Transform(data)
}

// RequestHash returns "sha256:<hex>" of the JCS form of args encoded as
// Execute encodes them: the receipt's request_hash for that call.
func RequestHash(args any) (string, error) {
	body, err := encodeArgs(args)
	if err != nil {
		return "", err
	}
	canon, err := CanonicalJSON(body)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
