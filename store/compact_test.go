package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// compactFixture opens a quiet store in dir with alice's session and the
// replay entries of her proofs "before-0" … "before-49".
func compactFixture(t *testing.T, dir string) (*Embedded, *clock.Fake, *Session) {
	t.Helper()
	clk := clock.NewFake(testStart())
	e := openQuiet(t, dir, clk)
	s := mustSession(t, e, clk, "alice")
	for i := range 50 {
		if err := auth(e, clk, s, s.JKT, fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return e, clk, s
}

// TestEmbeddedSyncDuringCompaction: while a compaction writes its
// snapshot, syncMu is free (a ledger commit's Sync must not wait for the
// whole snapshot write), and what is committed and synced meanwhile, or
// committed and never synced, is in the journal that survives.
func TestEmbeddedSyncDuringCompaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, clk, s := compactFixture(t, dir)
	var bob *Session
	e.beforeInstall = func() {
		if !e.syncMu.TryLock() {
			t.Error("syncMu held while the snapshot is written: every Sync would wait for it")
		} else {
			e.syncMu.Unlock()
		}
		wantErr(t, "Authenticate(during)", auth(e, clk, s, s.JKT, "during-synced"), nil)
		if _, err := e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "during", ActionID: "echo"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := e.Sync(); err != nil {
			t.Fatalf("Sync during compaction = %v", err)
		}
		var err error
		if bob, err = newSession(t, e, clk, "bob", PrincipalLimits{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "during-unsynced", ActionID: "echo"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.compact(); err != nil {
		t.Fatalf("compact = %v", err)
	}
	e.beforeInstall = nil
	wantErr(t, "Authenticate(after)", auth(e, clk, s, s.JKT, "after"), nil)
	if err := e.Sync(); err != nil {
		t.Fatal(err)
	}
	kill(e)

	e2 := openQuiet(t, dir, clk)
	for _, jti := range []string{"before-7", "during-synced", "after"} {
		wantErr(t, "Authenticate("+jti+" again)", auth(e2, clk, s, s.JKT, jti), ErrReplay)
	}
	if _, err := e2.GetSession(ctx, bob.ID); err != nil {
		t.Errorf("GetSession(created during compaction) = %v", err)
	}
	for _, k := range []string{"during", "during-unsynced"} {
		if rec := idem(t, e2, k); rec == nil {
			t.Errorf("idempotency record %q committed during compaction is gone", k)
		}
	}
}

// TestImageWriteToMatchesEncode: the streamed snapshot a compaction writes
// is byte for byte the one Open writes (encode).
func TestImageWriteToMatchesEncode(t *testing.T) {
	clk := clock.NewFake(testStart())
	e := openQuiet(t, t.TempDir(), clk)
	s := mustSession(t, e, clk, "alice")
	for i := range 300 {
		if err := auth(e, clk, s, s.JKT, fmt.Sprintf("jti-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := grant(e, clk, s, 1, 0, PrincipalLimits{}); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	im := e.imageLocked()
	e.mu.Unlock()
	want := im.encode()
	var got bytes.Buffer
	n, err := im.writeTo(&got)
	if err != nil || n != int64(len(want)) || n != int64(got.Len()) {
		t.Fatalf("writeTo = %d bytes (%d written), %v; want the %d bytes of encode", n, got.Len(), err, len(want))
	}
	// Maps iterate in any order: compare the lines as sets.
	lines := func(b []byte) []string {
		l := strings.SplitAfter(string(b), "\n")
		slices.Sort(l)
		return l
	}
	if !slices.Equal(lines(got.Bytes()), lines(want)) {
		t.Fatalf("writeTo wrote other lines than encode")
	}
}

// TestEmbeddedCompactionCatchUp: the lines committed while the snapshot
// was written are copied to the new journal and fsynced without mu (the
// store keeps serving and syncing), and only what came during the last
// round is written under it. Everything committed before, during and
// after survives a kill -9, and the size the store counts is the new
// journal's.
func TestEmbeddedCompactionCatchUp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, clk, s := compactFixture(t, dir)
	e.beforeInstall = func() {
		for i := range 20 {
			wantErr(t, "Authenticate(while the snapshot is written)", auth(e, clk, s, s.JKT, fmt.Sprintf("snap-%d", i)), nil)
		}
	}
	var bob *Session
	rounds := 0
	e.duringCatchUp = func() {
		rounds++
		if !e.mu.TryLock() {
			t.Error("mu held during the catch-up round: every request would wait for its write and fsync")
			return
		}
		e.mu.Unlock()
		if !e.syncMu.TryLock() {
			t.Error("syncMu held during the catch-up round")
		} else {
			e.syncMu.Unlock()
		}
		wantErr(t, "Authenticate(during the catch-up)", auth(e, clk, s, s.JKT, fmt.Sprintf("catchup-%d", rounds)), nil)
		if err := e.Sync(); err != nil {
			t.Fatalf("Sync during the catch-up = %v", err)
		}
		if rounds == 1 {
			var err error
			if bob, err = newSession(t, e, clk, "bob", PrincipalLimits{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.compact(); err != nil {
		t.Fatalf("compact = %v", err)
	}
	e.beforeInstall, e.duringCatchUp = nil, nil
	if rounds == 0 {
		t.Fatal("no catch-up round ran")
	}
	e.mu.Lock()
	size := e.size
	e.mu.Unlock()
	if got := int64(len(journalBytes(t, dir))); size != got {
		t.Errorf("store counts %d journal bytes after compacting, the file has %d", size, got)
	}
	wantErr(t, "Authenticate(after)", auth(e, clk, s, s.JKT, "after"), nil)
	kill(e)

	e2 := openQuiet(t, dir, clk)
	jtis := []string{"before-7", "snap-3", "after"}
	for i := 1; i <= rounds; i++ {
		jtis = append(jtis, fmt.Sprintf("catchup-%d", i))
	}
	for _, jti := range jtis {
		wantErr(t, "Authenticate("+jti+" again)", auth(e2, clk, s, s.JKT, jti), ErrReplay)
	}
	if _, err := e2.GetSession(ctx, bob.ID); err != nil {
		t.Errorf("GetSession(created during the catch-up) = %v", err)
	}
}

// TestEmbeddedCompactionDirSyncFails: a compaction renames its snapshot
// over the journal; until the directory is fsynced a power loss may bring
// the old journal back, without what is committed to the new one from
// then on. When that fsync fails, no later Sync may report a line durable
// (a revocation, an idempotency claim): the store refuses mutations, as
// after any failed fsync.
func TestEmbeddedCompactionDirSyncFails(t *testing.T) {
	ctx := context.Background()
	e, clk, s := compactFixture(t, t.TempDir())
	e.syncDir = func(string) error { return syscall.EIO }
	if err := e.compact(); err == nil {
		t.Errorf("compact with a failing directory fsync = nil, want the error")
	}
	_, err := e.Revoke(ctx, RevokeRequest{SessionID: s.ID}, clk.Now())
	wantErr(t, "Revoke(after the failed directory fsync)", err, ErrUnavailable)
	wantErr(t, "Sync(after the failed directory fsync)", e.Sync(), ErrUnavailable)
	wantErr(t, "Ping", e.Ping(ctx), ErrUnavailable)
	wantErr(t, "Authenticate", auth(e, clk, s, s.JKT, "after"), ErrUnavailable)
}
