package receipts

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/gowebpki/jcs"
)

// Signature statuses returned by VerifyReceipt.
const (
	StatusValid        = "valid"
	StatusInvalid      = "invalid"
	StatusUnknownKeyID = "unknown_key_id"
	// StatusChained is VerifyAuditRecord's answer for an audit record
	// written without a signature by design (see mayBeUnsigned): its hash
	// matches its content, and the ledger verification (chain links up to
	// the signed head) is what authenticates it.
	StatusChained = "chained"
)

const hashPrefix = "sha256:"

var b64 = base64.RawURLEncoding

// HashJSON returns "sha256:<lowercase hex>" of the RFC 8785 (JCS) form of
// raw. It fails on JSON that is not I-JSON (duplicate keys, invalid UTF-8,
// numbers out of range).
func HashJSON(raw []byte) (string, error) {
	c := canonPool.Get().(*canon)
	canonical, err := c.canonicalJSON(raw)
	if err != nil {
		canonPool.Put(c)
		return "", fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	h := hashBytes(canonical)
	if cap(c.out) <= maxPooledBuf && cap(c.scratch) <= maxPooledBuf {
		canonPool.Put(c)
	}
	return h, nil
}

func hashBytes(canon []byte) string {
	sum := sha256.Sum256(canon)
	var b [len(hashPrefix) + 2*sha256.Size]byte
	copy(b[:], hashPrefix)
	hex.Encode(b[len(hashPrefix):], sum[:])
	return string(b[:])
}

// recordHash computes the hash of a stored receipt or audit record: JCS of
// the object without hash, signature, key_id and signature_status.
func recordHash(raw []byte) (string, error) {
	// Canonicalise first: this rejects duplicate keys, which a map decode
	// would silently resolve.
	canon, err := jcs.Transform(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(canon, &m); err != nil {
		return "", fmt.Errorf("%w: not a JSON object: %w", ErrInvalidRecord, err)
	}
	for _, k := range []string{"hash", "signature", "key_id", "signature_status"} {
		delete(m, k)
	}
	stripped, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return HashJSON(stripped)
}

// Thumbprint returns the RFC 7638 thumbprint of an Ed25519 public key:
// base64url-no-pad SHA-256 over {"crv":"Ed25519","kty":"OKP","x":"…"}.
func Thumbprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + b64.EncodeToString(pub) + `"}`))
	return b64.EncodeToString(sum[:])
}

// signer is one Ed25519 signing key.
type signer struct {
	kid  string
	priv ed25519.PrivateKey
}

func newSigner(priv ed25519.PrivateKey) *signer {
	return &signer{kid: Thumbprint(priv.Public().(ed25519.PublicKey)), priv: priv}
}

// sign signs the ASCII bytes of a "sha256:…" hash string.
func (s *signer) sign(hash string) string { return SignHash(s.priv, hash) }

// SignHash returns the base64url Ed25519 signature a record carries: over
// the ASCII bytes of its "sha256:…" hash string. The ledger signs with it;
// `latchgate bench` times it as part of the floor.
func SignHash(priv ed25519.PrivateKey, hash string) string {
	return b64.EncodeToString(ed25519.Sign(priv, []byte(hash)))
}

// sealAppend seals the record whose JCS form is rec (written by
// appendReceipt or appendAudit with empty hash, signature and key_id, so
// without them), appending to rec: it hashes those bytes, signs the hash
// and puts the three members before the closing brace. The stored record
// is therefore its hashed bytes with those three members last. The ledger
// writer seals straight into its group commit's buffer.
func (s *signer) sealAppend(rec []byte) ([]byte, string, string, error) {
	b, h, err := hashAppend(rec)
	if err != nil {
		return nil, "", "", err
	}
	sig := s.sign(h)
	b = append(b[:len(b)-1], `,"signature":"`...)
	b = append(b, sig...)
	b = append(b, `","key_id":"`...)
	b = append(b, s.kid...)
	return append(b, `"}`...), h, sig, nil
}

// hashAppend is sealAppend without the signature: it appends only the
// hash, for audit records that may be unsigned (see mayBeUnsigned).
func hashAppend(rec []byte) ([]byte, string, error) {
	if len(rec) < 2 || rec[0] != '{' || rec[len(rec)-1] != '}' {
		return nil, "", fmt.Errorf("%w: not a JSON object", ErrInvalidRecord)
	}
	h := hashBytes(rec)
	b := append(rec[:len(rec)-1], `,"hash":"`...)
	b = append(b, h...)
	return append(b, `"}`...), h, nil
}

// mayBeUnsigned reports whether an audit record with this decision is
// written without its own signature. An "allow" record is the decision
// half of an execution: the gate writes it with the intent, and the
// receipt that follows (an interrupted one after a crash) carries the same
// facts — principal, session, action, request hash, policy version —
// under its own Ed25519 signature. The record itself stays in the hash
// chain, whose every link is covered by the signed head (and by any later
// signed record's prev_hash), so it cannot be altered, dropped or inserted
// undetected. Signing it as well was a second Ed25519 signature on every
// execute (≈ 12% of the gate's CPU in a profile) that proved nothing the
// receipt and the head do not. Every other decision (deny, pending,
// operator approve/deny, expire, failed) has no receipt and stays signed.
func mayBeUnsigned(decision string) bool { return decision == DecisionAllow }

// signedFields are the members every stored record carries.
type signedFields struct {
	Hash      string `json:"hash"`
	Signature string `json:"signature"`
	KeyID     string `json:"key_id"`
}

// VerifyReceipt checks a stored receipt (or a signed audit record): the
// hash must match its content and the signature must verify under the key
// named by key_id. It returns StatusValid, StatusInvalid or
// StatusUnknownKeyID. Audit records that may be unsigned are checked by
// the ledger verification (their chain and the signed head), not here.
func VerifyReceipt(raw json.RawMessage, keys map[string]ed25519.PublicKey) string {
	var f signedFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return StatusInvalid
	}
	pub, ok := keys[f.KeyID]
	if !ok {
		return StatusUnknownKeyID
	}
	if checkSealed(raw, f, pub) != nil {
		return StatusInvalid
	}
	return StatusValid
}

// VerifyAuditRecord checks one stored audit record on its own: StatusValid
// when its signature verifies, StatusChained for a record that may be
// unsigned and carries no signature (hash checked), else StatusInvalid or
// StatusUnknownKeyID.
func VerifyAuditRecord(raw json.RawMessage, keys map[string]ed25519.PublicKey) string {
	var m recordMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return StatusInvalid
	}
	switch err := checkRecord(raw, &m, true, keys); {
	case errors.Is(err, errUnknownKeyID):
		return StatusUnknownKeyID
	case err != nil:
		return StatusInvalid
	case m.Signature == "":
		return StatusChained
	}
	return StatusValid
}

var (
	errHashMismatch = errors.New("hash does not match content")
	errBadSignature = errors.New("signature does not verify")
	errUnknownKeyID = errors.New("unknown key_id")
)

func checkSealed(raw []byte, f signedFields, pub ed25519.PublicKey) error {
	h, err := recordHash(raw)
	if err != nil {
		return err
	}
	if h != f.Hash {
		return errHashMismatch
	}
	sig, err := b64.DecodeString(f.Signature)
	if err != nil || !ed25519.Verify(pub, []byte(f.Hash), sig) {
		return errBadSignature
	}
	return nil
}

// checkRecord checks one stored record of a chain: its hash always, and
// its signature unless it is an audit record that may be unsigned and
// carries neither signature nor key_id (a record that carries either is
// checked in full).
func checkRecord(raw []byte, m *recordMeta, audit bool, keys map[string]ed25519.PublicKey) error {
	if audit && mayBeUnsigned(m.Decision) && m.Signature == "" && m.KeyID == "" {
		h, err := recordHash(raw)
		if err != nil {
			return err
		}
		if h != m.Hash {
			return errHashMismatch
		}
		return nil
	}
	pub, ok := keys[m.KeyID]
	if !ok {
		return errUnknownKeyID
	}
	return checkSealed(raw, m.signed(), pub)
}

// jwk is a public Ed25519 JWK.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

func publicJWK(pub ed25519.PublicKey) jwk {
	return jwk{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(pub), Kid: Thumbprint(pub), Use: "sig", Alg: "EdDSA"}
}

// ParseKeySet reads a JWKS of Ed25519 keys into a map by kid. A key whose
// kid is not its thumbprint is refused.
func ParseKeySet(data []byte) (map[string]ed25519.PublicKey, error) {
	var set jwks
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("receipts: key set: %w", err)
	}
	out := make(map[string]ed25519.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		x, err := b64.DecodeString(k.X)
		if k.Kty != "OKP" || k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("receipts: key set: key %q is not an Ed25519 OKP key", k.Kid)
		}
		pub := ed25519.PublicKey(x)
		if Thumbprint(pub) != k.Kid {
			return nil, fmt.Errorf("receipts: key set: kid %q is not the key's RFC 7638 thumbprint", k.Kid)
		}
		out[k.Kid] = pub
	}
	return out, nil
}

// MarshalKeySet returns keys as a JWK set (sorted by kid), the form of
// GET /v1/receipt-keys.
func MarshalKeySet(keys map[string]ed25519.PublicKey) []byte { return marshalKeySet(keys) }

func marshalKeySet(keys map[string]ed25519.PublicKey) []byte {
	kids := make([]string, 0, len(keys))
	for kid := range keys {
		kids = append(kids, kid)
	}
	sort.Strings(kids)
	set := jwks{Keys: make([]jwk, 0, len(kids))}
	for _, kid := range kids {
		set.Keys = append(set.Keys, publicJWK(keys[kid]))
	}
	b, _ := json.Marshal(set) // cannot fail: plain strings
	return b
}

// Key files inside Config.Dir.
const (
	keysDirName    = "keys"
	signingKeyFile = "signing.json" // current private key (0600)
	publicKeysFile = "public.json"  // JWKS of every key ever used (0600)
)

// privateKeyFile is the stored form of the signing key.
type privateKeyFile struct {
	Kid  string `json:"kid"`
	Seed string `json:"seed"` // base64url Ed25519 seed
}

// loadKeys loads the signing key and the public key set from dir/keys,
// creating a key on first use.
func loadKeys(fsys FS, dir string, rnd func([]byte) error) (*signer, map[string]ed25519.PublicKey, error) {
	kdir := filepath.Join(dir, keysDirName)
	if err := fsys.MkdirAll(kdir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("receipts: keys dir: %w", err)
	}
	pubs := map[string]ed25519.PublicKey{}
	if data, err := fsys.ReadFile(filepath.Join(kdir, publicKeysFile)); err == nil {
		if pubs, err = ParseKeySet(data); err != nil {
			return nil, nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("receipts: read public keys: %w", err)
	}
	data, err := fsys.ReadFile(filepath.Join(kdir, signingKeyFile))
	if err == nil {
		if err := checkPrivate(fsys, filepath.Join(kdir, signingKeyFile)); err != nil {
			return nil, nil, err
		}
	}
	switch {
	case err == nil:
		var pk privateKeyFile
		if err := json.Unmarshal(data, &pk); err != nil {
			return nil, nil, fmt.Errorf("receipts: signing key: %w", err)
		}
		seed, err := b64.DecodeString(pk.Seed)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, nil, errors.New("receipts: signing key: seed is not a base64url Ed25519 seed")
		}
		s := newSigner(ed25519.NewKeyFromSeed(seed))
		if _, ok := pubs[s.kid]; !ok {
			pubs[s.kid] = s.priv.Public().(ed25519.PublicKey)
			if err := writeFileAtomic(fsys, filepath.Join(kdir, publicKeysFile), marshalKeySet(pubs)); err != nil {
				return nil, nil, err
			}
		}
		return s, pubs, nil
	case errors.Is(err, fs.ErrNotExist):
		s, err := newKey(fsys, kdir, pubs, rnd)
		return s, pubs, err
	default:
		return nil, nil, fmt.Errorf("receipts: read signing key: %w", err)
	}
}

// checkPrivate refuses a key file that group or others may access (the
// lease keys are held to the same rule).
func checkPrivate(fsys FS, name string) error {
	fi, err := fsys.Stat(name)
	if err != nil {
		return fmt.Errorf("receipts: signing key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("receipts: signing key %s has mode %04o; group and others must not read it (chmod 600)", name, perm)
	}
	return nil
}

// newKey generates a key, adds its public half to pubs and persists both:
// the public set first, so a signature can never name a key the set lacks.
func newKey(fsys FS, kdir string, pubs map[string]ed25519.PublicKey, rnd func([]byte) error) (*signer, error) {
	seed := make([]byte, ed25519.SeedSize)
	if err := rnd(seed); err != nil {
		return nil, fmt.Errorf("receipts: key generation: %w", err)
	}
	s := newSigner(ed25519.NewKeyFromSeed(seed))
	pubs[s.kid] = s.priv.Public().(ed25519.PublicKey)
	if err := writeFileAtomic(fsys, filepath.Join(kdir, publicKeysFile), marshalKeySet(pubs)); err != nil {
		return nil, err
	}
	pk, _ := json.Marshal(privateKeyFile{Kid: s.kid, Seed: b64.EncodeToString(seed)})
	if err := writeFileAtomic(fsys, filepath.Join(kdir, signingKeyFile), pk); err != nil {
		return nil, err
	}
	return s, nil
}

// readPublicKeys reads dir/keys/public.json.
func readPublicKeys(fsys FS, dir string) (map[string]ed25519.PublicKey, error) {
	data, err := fsys.ReadFile(filepath.Join(dir, keysDirName, publicKeysFile))
	if err != nil {
		return nil, fmt.Errorf("receipts: read public keys: %w", err)
	}
	return ParseKeySet(data)
}

// writeFileAtomic writes data to a temp file (0600), fsyncs it and renames
// it over name, then fsyncs the directory.
func writeFileAtomic(fsys FS, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("receipts: write %s: %w", filepath.Base(name), err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = fsys.Rename(tmp, name)
	}
	if werr == nil {
		werr = syncDir(fsys, filepath.Dir(name))
	}
	if werr != nil {
		return fmt.Errorf("receipts: write %s: %w", filepath.Base(name), werr)
	}
	return nil
}

func syncDir(fsys FS, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
