package lease

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/latchgate/latchgate/atomicfile"
	"github.com/latchgate/latchgate/clock"
)

// Files in the keys directory.
const (
	keyFilePrefix = "lease-"
	keyFileSuffix = ".jwk"
	lockFileName  = ".lock"
	maxSecretSize = 1 << 20
	maxKeyFile    = 64 << 10
)

// Keys holds the lease signing keys of one keys directory. The newest key
// signs; every key (old ones included) verifies. Safe for concurrent use.
type Keys struct {
	dir string
	clk clock.Clock

	mu sync.Mutex // serialises Rotate and Reload within this process

	set atomic.Pointer[keySet] // current keys; replaced whole, never mutated
}

// keySet is an immutable snapshot of the keys directory.
type keySet struct {
	active *signingKey
	byKID  map[string]*signingKey
	jwks   []byte
}

// signingKey is one ES256 key with its go-jose signer.
type signingKey struct {
	kid     string
	created time.Time
	pub     *ecdsa.PublicKey
	jwk     ECJWK
	signer  jose.Signer
}

// keyFile is the on-disk form of a signing key: a private JWK plus its
// creation time (which orders keys; the newest signs).
type keyFile struct {
	Kty     string    `json:"kty"`
	Crv     string    `json:"crv"`
	X       string    `json:"x"`
	Y       string    `json:"y"`
	D       string    `json:"d"`
	KID     string    `json:"kid"`
	Created time.Time `json:"created_at"`
}

// LoadKeys loads the lease signing keys from dir, creating dir (0700) and a
// first key when there is none. Gates sharing dir load the same keys: creation
// happens under an exclusive lock file and re-checks for keys first, so
// concurrent first starts agree on one key. Key files must not be accessible
// by group or others, and dir must not be writable by them.
func LoadKeys(dir string, clk clock.Clock) (*Keys, error) {
	if clk == nil {
		return nil, errors.New("lease: LoadKeys needs a clock")
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	k := &Keys{dir: dir, clk: clk}
	set, err := readKeySet(dir)
	if err != nil {
		return nil, err
	}
	if set == nil {
		err = withDirLock(dir, func() error {
			set, err = readKeySet(dir)
			if err != nil || set != nil {
				return err
			}
			if err := writeNewKey(dir, clk.Now()); err != nil {
				return err
			}
			set, err = readKeySet(dir)
			if err == nil && set == nil {
				err = errors.New("lease: created a key but cannot read it back")
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	k.set.Store(set)
	return k, nil
}

// Rotate creates a new signing key, which becomes the active one; old keys are
// kept for verification and stay in the JWKS.
func (k *Keys) Rotate() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return withDirLock(k.dir, func() error {
		if err := writeNewKey(k.dir, k.clk.Now()); err != nil {
			return err
		}
		return k.reloadLocked()
	})
}

// Reload re-reads the keys directory, picking up keys another process (a
// rotation by `latchgate keys rotate`, another gate) added.
func (k *Keys) Reload() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloadLocked()
}

// reloadLocked re-reads the directory. k.mu must be held.
func (k *Keys) reloadLocked() error {
	set, err := readKeySet(k.dir)
	if err != nil {
		return err
	}
	if set == nil {
		return fmt.Errorf("lease: no signing key in %s", k.dir)
	}
	k.set.Store(set)
	return nil
}

// ActiveKID returns the kid of the key that signs new leases.
func (k *Keys) ActiveKID() string { return k.set.Load().active.kid }

// JWKS returns the public keys as a JWK set:
// {"keys":[{"kty","crv","x","y","kid","use":"sig","alg":"ES256"}…]}, newest
// first. The caller must not modify the returned slice.
func (k *Keys) JWKS() []byte { return k.set.Load().jwks }

// LoadSecret loads the secret file name in dir, creating it with size random
// bytes (mode 0600) when missing. The file holds raw bytes; an existing file of
// another size is an error. Creation is race-safe like LoadKeys.
func LoadSecret(dir, name string, size int) ([]byte, error) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") ||
		strings.HasPrefix(name, keyFilePrefix) {
		return nil, fmt.Errorf("lease: secret name %q must be a plain file name not starting with %q or %q", name, ".", keyFilePrefix)
	}
	if size < 16 || size > maxSecretSize {
		return nil, fmt.Errorf("lease: secret size %d must be between 16 and %d bytes", size, maxSecretSize)
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	b, err := readSecretFile(path, size)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	err = withDirLock(dir, func() error {
		b, err = readSecretFile(path, size)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		secret := make([]byte, size)
		if _, err := rand.Read(secret); err != nil {
			return fmt.Errorf("lease: random secret: %w", err)
		}
		if err := writeFileAtomic(dir, name, secret); err != nil {
			return err
		}
		b = secret
		return nil
	})
	return b, err
}

// readSecretFile reads a secret file, checking its mode and size. A missing
// file is an error wrapping fs.ErrNotExist.
func readSecretFile(path string, size int) ([]byte, error) {
	b, err := readPrivateFile(path, maxSecretSize)
	if err != nil {
		return nil, err
	}
	if len(b) != size {
		return nil, fmt.Errorf("lease: secret %s has %d bytes, want %d", path, len(b), size)
	}
	return b, nil
}

// prepareDir creates dir (0700) if missing and checks it is a directory not
// writable by group or others.
func prepareDir(dir string) error {
	if dir == "" {
		return errors.New("lease: keys dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lease: create keys dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("lease: keys dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("lease: keys dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("lease: keys dir %s has mode %04o; it must not be writable by group or others (chmod 700)", dir, fi.Mode().Perm())
	}
	return nil
}

// withDirLock runs fn holding an exclusive flock on dir/.lock, which
// serialises key and secret creation across processes and goroutines (each
// call opens its own file description).
func withDirLock(dir string, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lease: open lock file: %w", err)
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lease: lock keys dir: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too
	return fn()
}

// readPrivateFile reads a file of at most limit bytes that group and others
// cannot access.
func readPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("lease: %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("lease: %s has mode %04o; want 0600 or 0400", path, fi.Mode().Perm())
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("lease: %s is larger than %d bytes", path, limit)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && fi.Size() > 0 {
		return nil, fmt.Errorf("lease: read %s: %w", path, err)
	}
	return b, nil
}

// readKeySet reads every lease-*.jwk in dir. It returns nil, nil when there is
// none. Any unreadable or invalid key file is an error (fail closed).
func readKeySet(dir string) (*keySet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lease: read keys dir: %w", err)
	}
	var keys []*signingKey
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, keyFilePrefix) || !strings.HasSuffix(name, keyFileSuffix) {
			continue
		}
		sk, err := readKeyFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if want := keyFilePrefix + sk.kid + keyFileSuffix; name != want {
			return nil, fmt.Errorf("lease: key file %s holds kid %s (want file name %s)", name, sk.kid, want)
		}
		keys = append(keys, sk)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	sort.Slice(keys, func(i, j int) bool {
		if !keys[i].created.Equal(keys[j].created) {
			return keys[i].created.After(keys[j].created)
		}
		return keys[i].kid < keys[j].kid
	})
	set := &keySet{active: keys[0], byKID: make(map[string]*signingKey, len(keys))}
	type publicJWK struct {
		ECJWK
		KID string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
	}
	pubs := make([]publicJWK, 0, len(keys))
	for _, sk := range keys {
		set.byKID[sk.kid] = sk
		pubs = append(pubs, publicJWK{ECJWK: sk.jwk, KID: sk.kid, Use: "sig", Alg: "ES256"})
	}
	set.jwks, err = json.Marshal(struct {
		Keys []publicJWK `json:"keys"`
	}{pubs})
	if err != nil {
		return nil, fmt.Errorf("lease: encode jwks: %w", err)
	}
	return set, nil
}

// readKeyFile parses one key file.
func readKeyFile(path string) (*signingKey, error) {
	b, err := readPrivateFile(path, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("lease: key file: %w", err)
	}
	var kf keyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("lease: key file %s: %w", path, err)
	}
	if kf.Kty != "EC" || kf.Crv != "P-256" {
		return nil, fmt.Errorf("lease: key file %s: want kty EC, crv P-256", path)
	}
	d, err := base64.RawURLEncoding.Strict().DecodeString(kf.D)
	if err != nil || len(d) != 32 {
		return nil, fmt.Errorf("lease: key file %s: bad d", path)
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("lease: key file %s: bad d", path)
	}
	sk, err := newSigningKey(priv, kf.Created)
	if err != nil {
		return nil, fmt.Errorf("lease: key file %s: %w", path, err)
	}
	if sk.jwk.X != kf.X || sk.jwk.Y != kf.Y || sk.kid != kf.KID {
		return nil, fmt.Errorf("lease: key file %s: x, y or kid do not match d", path)
	}
	return sk, nil
}

// newSigningKey wraps a private key with its kid and signer.
func newSigningKey(priv *ecdsa.PrivateKey, created time.Time) (*signingKey, error) {
	jwk, err := jwkOf(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	kid := Thumbprint(jwk)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(jose.ES256)}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return &signingKey{kid: kid, created: created, pub: &priv.PublicKey, jwk: jwk, signer: signer}, nil
}

// writeNewKey generates a key and writes it as lease-<kid>.jwk.
func writeNewKey(dir string, now time.Time) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("lease: generate key: %w", err)
	}
	jwk, err := jwkOf(&priv.PublicKey)
	if err != nil {
		return err
	}
	d, err := priv.Bytes()
	if err != nil {
		return fmt.Errorf("lease: encode key: %w", err)
	}
	kid := Thumbprint(jwk)
	b, err := json.MarshalIndent(keyFile{
		Kty: jwk.Kty, Crv: jwk.Crv, X: jwk.X, Y: jwk.Y,
		D:       base64.RawURLEncoding.EncodeToString(d),
		KID:     kid,
		Created: now.UTC(),
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("lease: encode key: %w", err)
	}
	return writeFileAtomic(dir, keyFilePrefix+kid+keyFileSuffix, append(b, '\n'))
}

// writeFileAtomic writes data to dir/name with mode 0600, atomically.
func writeFileAtomic(dir, name string, data []byte) error {
	if err := atomicfile.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	return nil
}
