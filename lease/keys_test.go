package lease_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/lease"
)

func TestLoadKeysPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "keys")
	clk := clock.NewFake(t0())
	k1, err := lease.LoadKeys(dir, clk)
	if err != nil {
		t.Fatalf("LoadKeys(new dir) = %v", err)
	}
	k2, err := lease.LoadKeys(dir, clk)
	if err != nil {
		t.Fatalf("LoadKeys(again) = %v", err)
	}
	if k1.ActiveKID() != k2.ActiveKID() {
		t.Errorf("LoadKeys twice: kid %s then %s, want the same", k1.ActiveKID(), k2.ActiveKID())
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("keys dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	f := filepath.Join(dir, "lease-"+k1.ActiveKID()+".jwk")
	fi, err = os.Stat(f)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s mode = %v, %v; want 0600", f, fi.Mode().Perm(), err)
	}
	// The JWKS has the public key only.
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(k1.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS = %s, want one key", k1.JWKS())
	}
	jwk := set.Keys[0]
	for m, want := range map[string]any{"kty": "EC", "crv": "P-256", "kid": k1.ActiveKID(), "use": "sig", "alg": "ES256"} {
		if jwk[m] != want {
			t.Errorf("JWKS key %s = %v, want %v", m, jwk[m], want)
		}
	}
	if _, ok := jwk["d"]; ok || len(jwk) != 7 {
		t.Errorf("JWKS key = %v, want exactly kty,crv,x,y,kid,use,alg", jwk)
	}
	if got := lease.Thumbprint(lease.ECJWK{Kty: "EC", Crv: "P-256", X: jwk["x"].(string), Y: jwk["y"].(string)}); got != k1.ActiveKID() {
		t.Errorf("kid = %s, want thumbprint %s", k1.ActiveKID(), got)
	}
}

func TestLoadKeysConcurrent(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(t0())
	kids := make([]string, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range kids {
		wg.Go(func() {
			k, err := lease.LoadKeys(dir, clk)
			errs[i] = err
			if err == nil {
				kids[i] = k.ActiveKID()
			}
		})
	}
	wg.Wait()
	for i := range kids {
		if errs[i] != nil || kids[i] != kids[0] {
			t.Errorf("LoadKeys #%d = %s, %v; want %s", i, kids[i], errs[i], kids[0])
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "lease-*.jwk"))
	if len(files) != 1 {
		t.Errorf("key files = %v, want exactly one", files)
	}
}

func TestLoadKeysRefuses(t *testing.T) {
	clk := clock.NewFake(t0())
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"key_file_group_readable", func(t *testing.T, dir string) {
			chmodKey(t, dir, 0o640)
		}},
		{"key_file_world_readable", func(t *testing.T, dir string) {
			chmodKey(t, dir, 0o644)
		}},
		{"dir_group_writable", func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o770); err != nil {
				t.Fatal(err)
			}
		}},
		{"corrupt_key_file", func(t *testing.T, dir string) {
			writeKey(t, dir, func(b []byte) []byte { return b[:len(b)/2] })
		}},
		{"kid_not_matching_key", func(t *testing.T, dir string) {
			writeKey(t, dir, func(b []byte) []byte {
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				m["kid"] = strings.Repeat("A", 43)
				out, _ := json.Marshal(m)
				return out
			})
		}},
		{"x_not_matching_d", func(t *testing.T, dir string) {
			other := t.TempDir()
			k, err := lease.LoadKeys(other, clk)
			if err != nil {
				t.Fatal(err)
			}
			var set struct{ Keys []map[string]any }
			_ = json.Unmarshal(k.JWKS(), &set)
			writeKey(t, dir, func(b []byte) []byte {
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				m["x"], m["y"] = set.Keys[0]["x"], set.Keys[0]["y"]
				out, _ := json.Marshal(m)
				return out
			})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := lease.LoadKeys(dir, clk); err != nil {
				t.Fatal(err)
			}
			c.setup(t, dir)
			if k, err := lease.LoadKeys(dir, clk); err == nil {
				t.Errorf("LoadKeys(%s) = kid %s, nil; want an error", c.name, k.ActiveKID())
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	s1, err := lease.LoadSecret(dir, "store-mac.key", 32)
	if err != nil || len(s1) != 32 {
		t.Fatalf("LoadSecret = %x, %v; want 32 bytes", s1, err)
	}
	s2, err := lease.LoadSecret(dir, "store-mac.key", 32)
	if err != nil || !bytes.Equal(s1, s2) {
		t.Errorf("LoadSecret again = %x, %v; want %x", s2, err, s1)
	}
	fi, err := os.Stat(filepath.Join(dir, "store-mac.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := lease.LoadSecret(dir, "store-mac.key", 64); err == nil {
		t.Errorf("LoadSecret(size 64) over a 32-byte file = nil error, want an error")
	}
	for _, name := range []string{"", "../x", "a/b", ".hidden", "lease-x.jwk"} {
		if _, err := lease.LoadSecret(dir, name, 32); err == nil {
			t.Errorf("LoadSecret(%q) = nil error, want an error", name)
		}
	}

	// Concurrent first loads agree.
	dir = t.TempDir()
	got := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i], _ = lease.LoadSecret(dir, "s.key", 32) })
	}
	wg.Wait()
	for i := range got {
		if len(got[i]) != 32 || !bytes.Equal(got[i], got[0]) {
			t.Errorf("concurrent LoadSecret #%d = %x, want %x", i, got[i], got[0])
		}
	}
}

func keyFile(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "lease-*.jwk"))
	if len(files) != 1 {
		t.Fatalf("key files = %v, want 1", files)
	}
	return files[0]
}

func chmodKey(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(keyFile(t, dir), mode); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, dir string, mod func([]byte) []byte) {
	t.Helper()
	f := keyFile(t, dir)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, mod(b), 0o600); err != nil {
		t.Fatal(err)
	}
}
