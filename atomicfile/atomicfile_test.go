package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, tt := range []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"create", `{"v":1}`, 0o600},
		{"replace", `{"v":2}`, 0o600},
		{"other-mode", `{"v":3}`, 0o640},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := WriteFile(p, []byte(tt.data), tt.perm); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil || string(b) != tt.data {
				t.Fatalf("ReadFile = %q, %v; want %q", b, err, tt.data)
			}
			fi, _ := os.Stat(p)
			if fi.Mode().Perm() != tt.perm {
				t.Errorf("mode = %v, want %v", fi.Mode().Perm(), tt.perm)
			}
		})
	}
	// No temp files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries, want only the file", len(ents))
	}
	// A missing directory is an error, not a panic or a stray file.
	if err := WriteFile(filepath.Join(dir, "nope", "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing dir = nil error")
	}
	// A symlink at the final name is replaced, not followed.
	target := filepath.Join(dir, "target")
	_ = os.WriteFile(target, []byte("keep"), 0o600)
	link := filepath.Join(dir, "link")
	_ = os.Symlink(target, link)
	if err := WriteFile(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("symlink target was written through: %q", b)
	}
}
