package store

import (
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// TestEmbeddedCompactionBackoff: when the live records alone are larger
// than CompactBytes, a compaction must not be due again until the journal
// has doubled; otherwise the store rewrites (and buffers in memory) the
// same snapshot every SyncInterval. Before the fix it was due at once.
func TestEmbeddedCompactionBackoff(t *testing.T) {
	clk := clock.NewFake(testStart())
	e, err := OpenEmbedded(EmbeddedConfig{Dir: t.TempDir(), CompactBytes: 4096}, Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := mustSession(t, e, clk, "alice")
	// Live replay entries (they expire in 5 minutes; the clock stands still).
	for i := range 200 {
		if err := auth(e, clk, s, s.JKT, fmt.Sprintf("jti-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	due := func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.needsCompactLocked()
	}
	if !due() {
		t.Fatal("needsCompact before compaction = false, want true")
	}
	if err := e.compact(); err != nil {
		t.Fatalf("compact = %v", err)
	}
	e.mu.Lock()
	snap := e.size
	e.mu.Unlock()
	if snap <= 4096 {
		t.Fatalf("snapshot = %d bytes, want > 4096 (live records larger than CompactBytes)", snap)
	}
	if due() {
		t.Errorf("needsCompact right after compacting %d live bytes = true, want false", snap)
	}
	for i := 0; ; i++ {
		if err := auth(e, clk, s, s.JKT, fmt.Sprintf("more-%d", i)); err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		size := e.size
		e.mu.Unlock()
		if size > 2*snap {
			break
		}
		if due() {
			t.Fatalf("needsCompact at %d bytes = true, want false until > %d", size, 2*snap)
		}
	}
	if !due() {
		t.Error("needsCompact past twice the snapshot = false, want true")
	}
}
