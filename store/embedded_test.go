package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

func openEmbedded(t *testing.T, dir string, clk clock.Clock) *Embedded {
	t.Helper()
	e, err := OpenEmbedded(EmbeddedConfig{Dir: dir}, Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("OpenEmbedded(%s) = %v", dir, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestEmbeddedContract(t *testing.T) {
	runContract(t, func(t *testing.T, clk *clock.Fake) Store { return openEmbedded(t, t.TempDir(), clk) })
}

func TestEmbeddedSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openEmbedded(t, dir, clk)
	s := mustSession(t, e, clk, "alice", withMaxCalls(10))
	revoked := mustSession(t, e, clk, "alice")
	bob := mustSession(t, e, clk, "bob")
	if err := auth(e, clk, s, s.JKT, "jti-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := grant(e, clk, s, 3, 0, PrincipalLimits{MaxCallsPerHour: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(ctx, RevokeRequest{SessionID: revoked.ID}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(ctx, RevokeRequest{Principal: "bob"}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	a := newApproval(clk, s.ID, "h")
	if _, _, err := e.CreateApproval(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// Sync, as the ledger does before any answer that depends on these
	// (BeginIdempotent's line is buffered until then; the write-through
	// mutations survive without it, see TestEmbeddedWriteThroughSurvivesKill).
	if err := e.Sync(); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	// No Close: simulate kill -9 by abandoning e (its writes reached the
	// kernel) and opening a second handle once the lock is released.
	e.mu.Lock()
	e.lockf.Close()
	e.mu.Unlock()

	e2 := openEmbedded(t, dir, clk)
	wantErr(t, "Authenticate(same jti after restart)", auth(e2, clk, s, s.JKT, "jti-1"), ErrReplay)
	wantErr(t, "Authenticate(new jti after restart)", auth(e2, clk, s, s.JKT, "jti-2"), nil)
	wantErr(t, "Authenticate(revoked session after restart)", auth(e2, clk, revoked, revoked.JKT, "j"), ErrRevoked)
	wantErr(t, "Authenticate(revoked principal after restart)", auth(e2, clk, bob, bob.JKT, "j"), ErrRevoked)
	got, err := e2.GetSession(ctx, s.ID)
	if err != nil || got.CallsUsed != 3 {
		t.Fatalf("GetSession after restart = %+v, %v, want 3 calls used", got, err)
	}
	_, err = grant(e2, clk, s, 2, 0, PrincipalLimits{MaxCallsPerHour: 4})
	wantErr(t, "Grant(hour bucket after restart)", err, ErrBudgetExhausted)
	if _, err := e2.GetApproval(ctx, a.ID); err != nil {
		t.Fatalf("GetApproval after restart = %v", err)
	}
	if rec, _ := e2.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k"}, time.Hour); rec == nil {
		t.Fatalf("BeginIdempotent after restart = nil, want the running record")
	}
	fi, err := os.Stat(filepath.Join(dir, journalName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode = %v, %v, want 0600", fi.Mode().Perm(), err)
	}
}

func TestEmbeddedTornLastLine(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openEmbedded(t, dir, clk)
	s := mustSession(t, e, clk, "alice")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, tail string
		wantErr    bool
	}{
		{"torn", `[{"t":"r","k":"x`, false},
		{"corrupt_last", "garbage\n", false},
		{"corrupt_middle", "garbage\n[]\n", true},
		// Valid JSON that is no valid op: refused like garbage, never a
		// nil dereference while replaying.
		{"session_op_without_session_last", `[{"t":"s"}]` + "\n", false},
		{"session_op_without_session_middle", `[{"t":"s"}]` + "\n[]\n", true},
		{"approval_op_without_approval_middle", `[{"t":"a"}]` + "\n[]\n", true},
		// An op this version does not know (a newer latchgate wrote it)
		// fails the open even as the last line: replaying around it could
		// give back budget.
		{"unknown_op_last", `[{"t":"zz","k":"x"}]` + "\n", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			b, _ := os.ReadFile(filepath.Join(dir, journalName))
			os.WriteFile(filepath.Join(d, journalName), append(b, c.tail...), 0o600)
			e2, err := OpenEmbedded(EmbeddedConfig{Dir: d}, Deps{Clock: clk})
			if c.wantErr {
				want := "corrupt"
				if strings.HasPrefix(c.name, "unknown_op") {
					want = "newer latchgate"
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("OpenEmbedded = %v, want an error naming %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenEmbedded = %v", err)
			}
			defer e2.Close()
			if _, err := e2.GetSession(context.Background(), s.ID); err != nil {
				t.Fatalf("GetSession = %v", err)
			}
		})
	}
}

func TestEmbeddedLock(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openEmbedded(t, dir, clk)
	_, err := OpenEmbedded(EmbeddedConfig{Dir: dir}, Deps{Clock: clk})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenEmbedded = %v, want in-use error", err)
	}
	e.Close()
	e2 := openEmbedded(t, dir, clk)
	e2.Close()
}

func TestEmbeddedCompactsWhileRunning(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e, err := OpenEmbedded(EmbeddedConfig{Dir: dir, CompactBytes: 4096}, Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	s := mustSession(t, e, clk, "alice")
	for i := range 200 {
		if err := auth(e, clk, s, s.JKT, "j"+string(rune('a'+i%26))+time.Duration(i).String()); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(10 * time.Minute) // every replay entry expired
	for i := 0; ; i++ {
		if err := e.compact(); err != nil {
			t.Fatalf("compact = %v", err)
		}
		e.mu.Lock()
		size := e.size
		e.mu.Unlock()
		if size < 4096 {
			break
		}
		if i > 3 {
			t.Fatalf("journal size after compaction = %d, want < 4096", size)
		}
	}
	if err := auth(e, clk, s, s.JKT, "after"); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e2 := openEmbedded(t, dir, clk)
	wantErr(t, "Authenticate(replay after compaction)", auth(e2, clk, s, s.JKT, "after"), ErrReplay)
}

func TestEmbeddedConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  EmbeddedConfig
		ok   bool
	}{
		{"defaults", EmbeddedConfig{Dir: "/x"}, true},
		{"no_dir", EmbeddedConfig{}, false},
		{"negative_sync", EmbeddedConfig{Dir: "/x", SyncInterval: -1}, false},
		{"tiny_compact", EmbeddedConfig{Dir: "/x", CompactBytes: 10}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.withDefaults().Validate(); (err == nil) != c.ok {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", c.cfg, err, c.ok)
			}
		})
	}
	if _, err := OpenEmbedded(EmbeddedConfig{Dir: t.TempDir()}, Deps{}); err == nil {
		t.Fatalf("OpenEmbedded(no clock) = nil, want error")
	}
}

// TestEmbeddedGrantJournalsCounters: a grant's line carries the session's
// new counters (opUse), not the whole session record: it is one line per
// execute and the journal's growth sets how often it is compacted. The
// counters (calls and cost) survive a kill -9, and a session revoked in
// between stays revoked when a later use line is replayed.
func TestEmbeddedGrantJournalsCounters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openEmbedded(t, dir, clk)
	s := mustSession(t, e, clk, "alice", withMaxCalls(10), withMaxCost(1000))
	other := mustSession(t, e, clk, "bob")
	before := journalBytes(t, dir)
	for range 3 {
		if _, err := grant(e, clk, s, 1, 25, PrincipalLimits{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := grant(e, clk, other, 1, 0, PrincipalLimits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(ctx, RevokeRequest{SessionID: other.ID}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := grant(e, clk, s, 1, 25, PrincipalLimits{}); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(journalBytes(t, dir)[len(before):]), []byte("\n"))
	uses := 0
	for _, l := range lines {
		var ops []jop
		if err := json.Unmarshal(l, &ops); err != nil {
			t.Fatalf("journal line %s: %v", l, err)
		}
		for _, o := range ops {
			if o.T == opUse {
				uses++
			}
			if o.T == opSession && o.S.ID == s.ID {
				t.Errorf("a grant journalled the whole session: %s", l)
			}
		}
	}
	if uses != 5 {
		t.Errorf("opUse ops = %d, want one per grant (5)", uses)
	}
	e.mu.Lock()
	e.lockf.Close()
	e.mu.Unlock()
	e2 := openEmbedded(t, dir, clk)
	got, err := e2.GetSession(ctx, s.ID)
	if err != nil || got.CallsUsed != 4 || got.CostUsedCents != 100 {
		t.Fatalf("GetSession after restart = %+v, %v, want 4 calls and 100 cents used", got, err)
	}
	if got, err := e2.GetSession(ctx, other.ID); err != nil || !got.Revoked || got.CallsUsed != 1 {
		t.Fatalf("revoked session after restart = %+v, %v, want revoked with 1 call used", got, err)
	}
	_, err = grant(e2, clk, s, 7, 0, PrincipalLimits{})
	wantErr(t, "Grant(past max_calls after restart)", err, ErrBudgetExhausted)
}

func journalBytes(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEmbeddedPendingIndex: the pending index (holds and the expiry sweep
// read only it) always equals the stored approvals in state pending,
// through creates, claims, decisions, finishes, the retention sweep and a
// reopen from the journal. A decided approval no longer counts toward a
// session's pending cap, and a pending one does.
func TestEmbeddedPendingIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openEmbedded(t, dir, clk)
	check := func(step string) {
		t.Helper()
		e.mu.Lock()
		defer e.mu.Unlock()
		want, got := 0, 0
		for id, a := range e.approvals {
			if a.State == ApprovalPending {
				want++
				if e.pending[a.SessionID][id] != a {
					t.Errorf("%s: pending approval %s (session %s) missing from the index", step, id, a.SessionID)
				}
			}
		}
		for sid, ids := range e.pending {
			if len(ids) == 0 {
				t.Errorf("%s: empty index entry for session %s", step, sid)
			}
			got += len(ids)
		}
		if got != want {
			t.Errorf("%s: index holds %d approvals, %d are pending", step, got, want)
		}
	}
	hold := func(session, hash string) (*Approval, error) {
		a, _, err := e.CreateApproval(ctx, &Approval{ID: uuid.NewString(), SessionID: session, Principal: "p",
			ActionID: "a", RequestHash: hash, CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(15 * time.Minute)}, 2)
		return a, err
	}
	mustHold := func(session, hash string) *Approval {
		t.Helper()
		a, err := hold(session, hash)
		if err != nil {
			t.Fatalf("hold(%s, %s) = %v", session, hash, err)
		}
		return a
	}
	a1, a2 := mustHold("s1", "h1"), mustHold("s1", "h2")
	b1, b2 := mustHold("s2", "h1"), mustHold("s2", "h2")
	check("created")
	if _, err := hold("s1", "h3"); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("third hold in s1 = %v, want ErrTooManyPending", err)
	}
	if _, err := e.DecideApproval(ctx, a1.ID, ApprovalDenied, "op", "no", clk.Now()); err != nil {
		t.Fatal(err)
	}
	check("denied")
	mustHold("s1", "h3") // a1 no longer counts
	c, err := e.ClaimApproval(ctx, b1.ID, Claim{GateID: "g", By: "op", Deadline: clk.Now().Add(time.Minute)}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	check("claimed") // a claimed approval stays pending
	if _, err := e.FinishApproval(ctx, ApprovalFinish{ID: b1.ID, Token: c.Claim.Token, State: ApprovalApproved,
		DecidedBy: "op", DecidedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	check("finished")
	if _, err := e.DecideApproval(ctx, b2.ID, ApprovalExpired, "", "", clk.Now()); err != nil {
		t.Fatal(err)
	}
	check("expired")
	e.Close()
	e = openEmbedded(t, dir, clk)
	check("reopened")
	if _, err := e.GetApproval(ctx, a2.ID); err != nil {
		t.Fatal(err)
	}
	// Past retention the sweep drops them all; an unclaimed pending one
	// leaves the index with it.
	clk.Advance(approvalRetention + time.Hour)
	e.mu.Lock()
	e.sweepLocked(clk.Now())
	e.mu.Unlock()
	check("swept")
	if n := len(e.approvals); n != 0 {
		t.Errorf("%d approvals left after retention, want 0", n)
	}
}
