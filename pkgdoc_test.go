// Package latchgate_test holds repository-wide checks.
package latchgate_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails when a Go package has no package comment or more
// than one (STYLE rule 2).
func TestPackageDocs(t *testing.T) {
	dirs := map[string]bool{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != "." || d.Name() == "testdata" || d.Name() == "node_modules" || p == "sdk/python" || p == "sdk/typescript") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			dirs[filepath.Dir(p)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir := range dirs {
		if dir == "." {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		docs := map[string]int{} // package name → files with a package comment
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			name := af.Name.Name
			if _, ok := docs[name]; !ok {
				docs[name] = 0
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				docs[name]++
			}
		}
		for name, n := range docs {
			if n != 1 {
				t.Errorf("package %s (%s) has %d package comments, want exactly 1", name, dir, n)
			}
		}
	}
}
