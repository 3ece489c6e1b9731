package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestCommittedVectorsMatchGenerator fails when a committed vector file
// differs from what the generator writes (edit the generator, then run
// `go run ./definitions/test_vectors/gen` from the repository root).
func TestCommittedVectorsMatchGenerator(t *testing.T) {
	files, err := generate()
	if err != nil {
		t.Fatalf("generate() error = %v", err)
	}
	for _, name := range []string{
		"jcs/golden.json",
		"dpop/thumbprints.json",
		"dpop/htu.json",
		"dpop/proofs.json",
		"receipts/receipts.json",
	} {
		t.Run(name, func(t *testing.T) {
			want, ok := files[name]
			if !ok {
				t.Fatalf("generate() did not produce %s", name)
			}
			got, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(name)))
			if err != nil {
				t.Fatalf("ReadFile(%s) error = %v", name, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("committed %s differs from generator output (%d vs %d bytes); run go run ./definitions/test_vectors/gen", name, len(got), len(want))
			}
		})
	}
	if len(files) != 5 {
		t.Errorf("generate() produced %d files, want 5", len(files))
	}
}

// TestGenerateIsDeterministic guards against a random or time-dependent input.
func TestGenerateIsDeterministic(t *testing.T) {
	a, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("generate()[%s] differs between runs", name)
		}
	}
}

func TestNormalizeHTU(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ipv6_default_port", "http://[::1]:80/x", "http://[::1]/x"},
		{"ipv6_no_port_ending_in_80", "http://[::80]/x", "http://[::80]/x"},
		{"https_443", "HTTPS://A.B:443", "https://a.b/"},
		{"fragment_before_query", "http://a/p#x?y", "http://a/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := normalizeHTU(tt.in); got != tt.want {
				t.Errorf("normalizeHTU(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
