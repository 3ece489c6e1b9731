package store

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// openQuiet opens an embedded store whose background loop never syncs,
// compacts or sweeps during a test: what survives kill depends only on the
// commits themselves.
func openQuiet(t *testing.T, dir string, clk clock.Clock) *Embedded {
	t.Helper()
	e, err := OpenEmbedded(EmbeddedConfig{Dir: dir, SyncInterval: time.Hour, SweepInterval: time.Hour}, Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("OpenEmbedded(%s) = %v", dir, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// kill simulates kill -9: the background loop stops without syncing, the
// lines still buffered are dropped, and the journal and the directory
// lock are released. Only what reached the kernel survives.
func kill(e *Embedded) {
	e.mu.Lock()
	e.closed = true // every call fails from now on, and Close does nothing
	e.buf = nil
	e.mu.Unlock()
	close(e.stop)
	e.wg.Wait()
	e.f.Close()
	e.lockf.Close()
}

// durFixture is the state each durability case starts from, all synced.
type durFixture struct {
	e       *Embedded
	clk     *clock.Fake
	s       *Session  // alice's session
	pending *Approval // pending, unclaimed
	claimed *Approval // claimed by this gate
	sp      *Standing // standing approval, 10 uses
	ld      *LearnedDomain
	grantID string // set by cases that grant
	newID   string // id of a record a case creates
}

func newDurFixture(t *testing.T, dir string) *durFixture {
	t.Helper()
	ctx := context.Background()
	clk := clock.NewFake(testStart())
	e := openQuiet(t, dir, clk)
	now := clk.Now()
	fx := &durFixture{e: e, clk: clk, s: mustSession(t, e, clk, "alice")}
	var err error
	if fx.pending, _, err = e.CreateApproval(ctx, newApproval(clk, fx.s.ID, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	c, _, err := e.CreateApproval(ctx, newApproval(clk, fx.s.ID, "h2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if fx.claimed, err = e.ClaimApproval(ctx, c.ID, Claim{GateID: "g", By: "op", Deadline: now.Add(time.Minute)}, now); err != nil {
		t.Fatal(err)
	}
	fx.sp = &Standing{ID: uuid.NewString(), Principal: "alice", ActionID: "echo", CreatedBy: "op", CreatedAt: now, Uses: 10}
	if err := e.CreateStanding(ctx, fx.sp); err != nil {
		t.Fatal(err)
	}
	if fx.ld, err = e.PutLearned(ctx, &LearnedDomain{ID: uuid.NewString(), Principal: "alice", ActionID: "fetch",
		Host: "example.com", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k", ActionID: "echo"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(); err != nil {
		t.Fatalf("Sync = %v", err)
	}
	return fx
}

// idem returns the idempotency record (principal alice, key), or nil.
func idem(t *testing.T, e *Embedded, key string) *IdemRecord {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	it, ok := e.idem[idemKey("alice", key)]
	if !ok {
		return nil
	}
	return it.rec
}

// TestEmbeddedWriteThroughSurvivesKill: every mutation a caller may answer
// or act on without calling Sync (a lease, a revocation, a grant whose
// action runs before the receipt's Sync, an operator's decision...) must
// reach the kernel before it returns, together with every buffered line
// committed before it. Each case commits a buffered mutation, then the
// write-through one, then dies without any Sync.
func TestEmbeddedWriteThroughSurvivesKill(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(fx *durFixture) error
		check  func(t *testing.T, fx *durFixture, e2 *Embedded)
	}{
		{"authenticate", func(fx *durFixture) error {
			return auth(fx.e, fx.clk, fx.s, fx.s.JKT, "jti-kill")
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			wantErr(t, "Authenticate(same jti after kill)", auth(e2, fx.clk, fx.s, fx.s.JKT, "jti-kill"), ErrReplay)
		}},
		{"create_session", func(fx *durFixture) error {
			s, err := newSession(t, fx.e, fx.clk, "bob", PrincipalLimits{})
			if s != nil {
				fx.newID = s.ID
			}
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if _, err := e2.GetSession(ctx, fx.newID); err != nil {
				t.Errorf("GetSession(new session) = %v, want it", err)
			}
		}},
		{"renew_session", func(fx *durFixture) error {
			_, err := fx.e.RenewSession(ctx, fx.s.ID, []string{"renewed"}, fx.clk.Now().Add(time.Hour), fx.clk.Now())
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if got, err := e2.GetSession(ctx, fx.s.ID); err != nil || len(got.Scopes) != 1 || got.Scopes[0] != "renewed" {
				t.Errorf("GetSession after renew = %+v, %v, want scopes [renewed]", got, err)
			}
		}},
		{"revoke_session", func(fx *durFixture) error {
			_, err := fx.e.Revoke(ctx, RevokeRequest{SessionID: fx.s.ID}, fx.clk.Now())
			return err
		}, wantRevoked},
		{"revoke_principal", func(fx *durFixture) error {
			_, err := fx.e.Revoke(ctx, RevokeRequest{Principal: "alice"}, fx.clk.Now())
			return err
		}, wantRevoked},
		{"revoke_all", func(fx *durFixture) error {
			_, err := fx.e.Revoke(ctx, RevokeRequest{All: true}, fx.clk.Now())
			return err
		}, wantRevoked},
		{"grant", func(fx *durFixture) error {
			g, err := grant(fx.e, fx.clk, fx.s, 1, 5, PrincipalLimits{})
			if g != nil {
				fx.grantID = g.GrantID
			}
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if got, err := e2.GetSession(ctx, fx.s.ID); err != nil || got.CallsUsed != 1 || got.CostUsedCents != 5 {
				t.Errorf("GetSession after grant = %+v, %v, want 1 call and 5 cents used", got, err)
			}
			_, err := e2.Grant(ctx, GrantRequest{GrantID: fx.grantID, SessionID: fx.s.ID, Principal: "alice", Calls: 1, Now: fx.clk.Now()})
			wantErr(t, "Grant(same id after restart)", err, ErrGrantConsumed)
		}},
		{"refund", func(fx *durFixture) error {
			g, err := grant(fx.e, fx.clk, fx.s, 2, 0, PrincipalLimits{})
			if err != nil {
				return err
			}
			if err := fx.e.Sync(); err != nil {
				return err
			}
			return fx.e.Refund(ctx, g)
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if got, err := e2.GetSession(ctx, fx.s.ID); err != nil || got.CallsUsed != 0 {
				t.Errorf("GetSession after refund = %+v, %v, want 0 calls used", got, err)
			}
		}},
		{"finish_idempotent", func(fx *durFixture) error {
			return fx.e.FinishIdempotent(ctx, "alice", "k", 200, json.RawMessage(`{"ok":true}`), time.Hour)
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if rec := idem(t, e2, "k"); rec == nil || rec.State != IdemDone || rec.Status != 200 {
				t.Errorf("idempotency record after finish = %+v, want done with status 200", rec)
			}
		}},
		{"abort_idempotent", func(fx *durFixture) error {
			return fx.e.AbortIdempotent(ctx, "alice", "k")
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if rec := idem(t, e2, "k"); rec != nil {
				t.Errorf("idempotency record after abort = %+v, want none", rec)
			}
		}},
		{"create_approval", func(fx *durFixture) error {
			a, _, err := fx.e.CreateApproval(ctx, newApproval(fx.clk, fx.s.ID, "h3"), 0)
			if a != nil {
				fx.newID = a.ID
			}
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if _, err := e2.GetApproval(ctx, fx.newID); err != nil {
				t.Errorf("GetApproval(new) = %v, want it", err)
			}
		}},
		{"claim_approval", func(fx *durFixture) error {
			_, err := fx.e.ClaimApproval(ctx, fx.pending.ID, Claim{GateID: "g", By: "op", Deadline: fx.clk.Now().Add(time.Minute)}, fx.clk.Now())
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if a, err := e2.GetApproval(ctx, fx.pending.ID); err != nil || a.Claim == nil {
				t.Errorf("GetApproval after claim = %+v, %v, want a claim", a, err)
			}
		}},
		{"deny_approval", func(fx *durFixture) error {
			_, err := fx.e.DecideApproval(ctx, fx.pending.ID, ApprovalDenied, "op", "no", fx.clk.Now())
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if a, err := e2.GetApproval(ctx, fx.pending.ID); err != nil || a.State != ApprovalDenied {
				t.Errorf("GetApproval after deny = %+v, %v, want denied", a, err)
			}
		}},
		{"finish_approval", func(fx *durFixture) error {
			_, err := fx.e.FinishApproval(ctx, ApprovalFinish{ID: fx.claimed.ID, Token: fx.claimed.Claim.Token,
				State: ApprovalApproved, DecidedBy: "op", DecidedAt: fx.clk.Now()})
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if a, err := e2.GetApproval(ctx, fx.claimed.ID); err != nil || a.State != ApprovalApproved {
				t.Errorf("GetApproval after finish = %+v, %v, want approved", a, err)
			}
		}},
		{"create_standing", func(fx *durFixture) error {
			fx.newID = uuid.NewString()
			return fx.e.CreateStanding(ctx, &Standing{ID: fx.newID, Principal: "bob", ActionID: "echo", Uses: 1})
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if p, err := e2.FindStanding(ctx, "bob", "echo", fx.clk.Now()); err != nil || p.ID != fx.newID {
				t.Errorf("FindStanding(bob) = %+v, %v, want the new one", p, err)
			}
		}},
		{"delete_standing", func(fx *durFixture) error {
			return fx.e.DeleteStanding(ctx, fx.sp.ID)
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			_, err := e2.FindStanding(ctx, "alice", "echo", fx.clk.Now())
			wantErr(t, "FindStanding(deleted)", err, ErrNotFound)
		}},
		{"put_learned", func(fx *durFixture) error {
			_, err := fx.e.PutLearned(ctx, &LearnedDomain{ID: uuid.NewString(), Principal: "bob", ActionID: "fetch",
				Host: "example.org", ExpiresAt: fx.clk.Now().Add(time.Hour)})
			return err
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if l, err := e2.LearnedFor(ctx, "bob", "fetch", fx.clk.Now()); err != nil || len(l) != 1 {
				t.Errorf("LearnedFor(bob) = %v, %v, want 1 entry", l, err)
			}
		}},
		{"delete_learned", func(fx *durFixture) error {
			return fx.e.DeleteLearned(ctx, fx.ld.ID)
		}, func(t *testing.T, fx *durFixture, e2 *Embedded) {
			if l, err := e2.LearnedFor(ctx, "alice", "fetch", fx.clk.Now()); err != nil || len(l) != 0 {
				t.Errorf("LearnedFor(alice) after delete = %v, %v, want none", l, err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fx := newDurFixture(t, dir)
			// Buffered, then written by the write-through commit below.
			if _, err := fx.e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "before", ActionID: "echo"}, time.Hour); err != nil {
				t.Fatal(err)
			}
			if err := c.mutate(fx); err != nil {
				t.Fatalf("mutation = %v", err)
			}
			kill(fx.e)
			e2 := openQuiet(t, dir, fx.clk)
			if rec := idem(t, e2, "before"); rec == nil {
				t.Errorf("buffered record committed before the write-through mutation was lost")
			}
			c.check(t, fx, e2)
		})
	}
}

func wantRevoked(t *testing.T, fx *durFixture, e2 *Embedded) {
	t.Helper()
	wantErr(t, "Authenticate(revoked, after kill)", auth(e2, fx.clk, fx.s, fx.s.JKT, "after"), ErrRevoked)
}

// TestEmbeddedBufferedSurvivesSync: a buffered mutation is acknowledged as
// durable once Sync returns (the ledger's group commit), once Close
// returns, once a compaction ran, or once the buffer passed flushBytes;
// after any of these a kill -9 must not lose it.
func TestEmbeddedBufferedSurvivesSync(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(t *testing.T, fx *durFixture)
	}{
		{"sync_then_kill", func(t *testing.T, fx *durFixture) {
			if err := fx.e.Sync(); err != nil {
				t.Fatalf("Sync = %v", err)
			}
			kill(fx.e)
		}},
		{"close", func(t *testing.T, fx *durFixture) {
			if err := fx.e.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
		}},
		{"compact_then_kill", func(t *testing.T, fx *durFixture) {
			if err := fx.e.compact(); err != nil {
				t.Fatalf("compact = %v", err)
			}
			kill(fx.e)
		}},
		{"past_threshold_then_kill", func(t *testing.T, fx *durFixture) {
			for i := 0; ; i++ {
				if err := auth(fx.e, fx.clk, fx.s, fx.s.JKT, uuid.NewString()); err != nil {
					t.Fatal(err)
				}
				fx.e.mu.Lock()
				n := len(fx.e.buf)
				fx.e.mu.Unlock()
				if n == 0 {
					break
				}
				if i > 2*flushBytes/64 {
					t.Fatalf("buffer of %d bytes never flushed (threshold %d)", n, flushBytes)
				}
			}
			kill(fx.e)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fx := newDurFixture(t, dir)
			// Every buffered mutation, as the gate issues them.
			wantErr(t, "Authenticate", auth(fx.e, fx.clk, fx.s, fx.s.JKT, "jti-1"), nil)
			if _, err := fx.e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k2", ActionID: "echo"}, time.Hour); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "SetIdempotentGrant", fx.e.SetIdempotentGrant(ctx, "alice", "k", "g1", "r1"), nil)
			if _, err := fx.e.UseStanding(ctx, fx.sp.ID, fx.clk.Now()); err != nil {
				t.Fatal(err)
			}
			c.end(t, fx)

			e2 := openQuiet(t, dir, fx.clk)
			wantErr(t, "Authenticate(same jti after restart)", auth(e2, fx.clk, fx.s, fx.s.JKT, "jti-1"), ErrReplay)
			if rec := idem(t, e2, "k2"); rec == nil || rec.State != IdemRunning {
				t.Errorf("BeginIdempotent's record after restart = %+v, want running", rec)
			}
			if rec := idem(t, e2, "k"); rec == nil || rec.GrantID != "g1" || rec.ReceiptID != "r1" {
				t.Errorf("SetIdempotentGrant's record after restart = %+v, want grant g1, receipt r1", rec)
			}
			if p, err := e2.FindStanding(ctx, "alice", "echo", fx.clk.Now()); err != nil || p.Used != 1 {
				t.Errorf("standing approval after restart = %+v, %v, want 1 use", p, err)
			}
		})
	}
}

// failJournal points the store's journal at /dev/full, where every write
// fails with ENOSPC.
func failJournal(t *testing.T, e *Embedded) {
	t.Helper()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	e.mu.Lock()
	good := e.f
	e.f = full
	e.mu.Unlock()
	t.Cleanup(func() { good.Close() })
}

// TestEmbeddedWriteFailureIsReported: a journal write that fails, whether
// at Sync, at a write-through commit or at the buffer threshold, must make
// Sync, Ping and Close fail and every later mutation be refused; a
// write-through mutation whose write failed must not become visible.
func TestEmbeddedWriteFailureIsReported(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		fail func(t *testing.T, fx *durFixture) // ends with the failed write
	}{
		{"buffered_then_sync", func(t *testing.T, fx *durFixture) {
			if _, err := fx.e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "buffered", ActionID: "echo"}, time.Hour); err != nil {
				t.Fatalf("BeginIdempotent(buffered) = %v, want nil", err)
			}
			wantErr(t, "Sync", fx.e.Sync(), ErrUnavailable)
		}},
		{"write_through", func(t *testing.T, fx *durFixture) {
			_, err := fx.e.Revoke(ctx, RevokeRequest{SessionID: fx.s.ID}, fx.clk.Now())
			wantErr(t, "Revoke", err, ErrUnavailable)
			if got, err := fx.e.GetSession(ctx, fx.s.ID); err != nil || got.Revoked {
				t.Errorf("GetSession after a failed revoke = %+v, %v, want the session unrevoked (nothing applied)", got, err)
			}
		}},
		{"threshold", func(t *testing.T, fx *durFixture) {
			for i := 0; ; i++ {
				_, err := fx.e.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: uuid.NewString(), ActionID: "echo"}, time.Hour)
				if err != nil {
					wantErr(t, "BeginIdempotent(at threshold)", err, ErrUnavailable)
					break
				}
				if i > 2*flushBytes/64 {
					t.Fatalf("no write failure after %d buffered commits", i)
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newDurFixture(t, t.TempDir())
			failJournal(t, fx.e)
			c.fail(t, fx)
			wantErr(t, "Sync(after the failure)", fx.e.Sync(), ErrUnavailable)
			wantErr(t, "Sync(again)", fx.e.Sync(), ErrUnavailable)
			wantErr(t, "Ping", fx.e.Ping(ctx), ErrUnavailable)
			wantErr(t, "Authenticate(after the failure)", auth(fx.e, fx.clk, fx.s, fx.s.JKT, "later"), ErrUnavailable)
			_, err := fx.e.Revoke(ctx, RevokeRequest{All: true}, fx.clk.Now())
			wantErr(t, "Revoke(after the failure)", err, ErrUnavailable)
			if err := fx.e.Close(); err == nil {
				t.Errorf("Close = nil, want the write error")
			}
		})
	}
}

// TestEmbeddedReadsMarshalJournal: a journal whose lines were written with
// json.Marshal (the encoder before appendLine) opens with every record,
// and so does the snapshot the new encoder writes from it.
func TestEmbeddedReadsMarshalJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	now := clk.Now()
	s := &Session{ID: "s1", Principal: "alice", JKT: "jkt", Scopes: []string{"tools:call"}, MaxCalls: ptr(10),
		CreatedAt: now, MaxExpiresAt: now.Add(24 * time.Hour), LeaseExpiresAt: now.Add(time.Hour)}
	used := *s
	used.CallsUsed, used.CostUsedCents = 3, 7
	a := newApproval(clk, "s1", "h")
	lines := [][]jop{
		{{T: opSession, S: s}},
		{{T: opSession, S: &Session{ID: "s2", Principal: "b<o>b", JKT: "jkt2", CreatedAt: now, MaxExpiresAt: now.Add(time.Hour), LeaseExpiresAt: now.Add(time.Hour)}}},
		{{T: opReplay, K: hashKey("jkt", "jti-1"), E: now.Add(5 * time.Minute)}},
		{{T: opSession, S: &used},
			{T: opBucket, K: hourKey("alice", now), N: 3, E: now.Add(hourBucketTTL)},
			{T: opBucket, K: dayKey("alice", now), N: 7, E: now.Add(dayBucketTTL)},
			{T: opGrant, K: "0192f1d2-7c3a-7b1e-9a4f-3c2d1e0f9a8b", E: now.Add(time.Hour)}},
		{{T: opPrincipal, K: "b<o>b", N: 1}},
		{{T: opIdem, K: idemKey("alice", "k"), I: &IdemRecord{Principal: "alice", Key: "k", State: IdemRunning, GrantID: "g"}, E: now.Add(time.Hour)}},
		{{T: opApproval, A: a}},
	}
	var old bytes.Buffer
	for _, ops := range lines {
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		old.Write(append(b, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dir, journalName), old.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(e *Embedded) {
		t.Helper()
		got, err := e.GetSession(ctx, "s1")
		if err != nil || got.CallsUsed != 3 || got.CostUsedCents != 7 || *got.MaxCalls != 10 {
			t.Fatalf("GetSession(s1) = %+v, %v, want 3 calls and 7 cents used of 10 calls", got, err)
		}
		wantErr(t, "Authenticate(s2, revoked principal)", auth(e, clk, &Session{ID: "s2"}, "jkt2", "j"), ErrRevoked)
		wantErr(t, "Authenticate(replayed jti)", auth(e, clk, s, "jkt", "jti-1"), ErrReplay)
		_, err = grant(e, clk, s, 8, 0, PrincipalLimits{})
		wantErr(t, "Grant(past the session's calls)", err, ErrBudgetExhausted)
		_, err = e.Grant(ctx, GrantRequest{GrantID: "0192f1d2-7c3a-7b1e-9a4f-3c2d1e0f9a8b", SessionID: "s1", Principal: "alice", Calls: 1, Now: now})
		wantErr(t, "Grant(consumed id)", err, ErrGrantConsumed)
		if rec := idem(t, e, "k"); rec == nil || rec.GrantID != "g" {
			t.Fatalf("idempotency record = %+v, want grant g", rec)
		}
		if _, err := e.GetApproval(ctx, a.ID); err != nil {
			t.Fatalf("GetApproval = %v", err)
		}
	}
	e := openQuiet(t, dir, clk)
	check(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	check(openQuiet(t, dir, clk)) // the snapshot written by appendLine
}

// TestEmbeddedObserveFsync: Deps.ObserveFsync sees every fsync of the
// journal, and only real ones (a Sync with nothing new does not fsync).
func TestEmbeddedObserveFsync(t *testing.T) {
	clk := clock.NewFake(testStart())
	var seen []time.Duration
	e, err := OpenEmbedded(EmbeddedConfig{Dir: t.TempDir(), SyncInterval: time.Hour, SweepInterval: time.Hour},
		Deps{Clock: clk, Logger: zerolog.Nop(), ObserveFsync: func(d time.Duration) { seen = append(seen, d) }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := mustSession(t, e, clk, "alice")
	if err := auth(e, clk, s, s.JKT, uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 1 || seen[0] <= 0 {
		t.Fatalf("observed fsyncs %v after one dirty and one clean Sync, want one positive duration", seen)
	}
}

// TestRestoreReplay: entries put back are refused as replays, now and after
// a kill -9 (RestoreReplay syncs them); expired and present entries are
// skipped and not counted.
func TestRestoreReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(testStart())
	e := openQuiet(t, dir, clk)
	s := mustSession(t, e, clk, "alice")
	if err := auth(e, clk, s, s.JKT, "jti-used"); err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	entries := []ReplayEntry{
		{JKT: s.JKT, JTI: "jti-lost", ExpiresAt: now.Add(time.Minute)},
		{JKT: s.JKT, JTI: "jti-used", ExpiresAt: now.Add(time.Minute)},     // present
		{JKT: s.JKT, JTI: "jti-expired", ExpiresAt: now.Add(-time.Second)}, // expired
	}
	n, err := e.RestoreReplay(ctx, entries, now)
	if err != nil || n != 1 {
		t.Fatalf("RestoreReplay = %d, %v; want 1 restored", n, err)
	}
	wantErr(t, "Authenticate(restored jti)", auth(e, clk, s, s.JKT, "jti-lost"), ErrReplay)
	if err := auth(e, clk, s, s.JKT, "jti-expired"); err != nil {
		t.Errorf("Authenticate(expired entry, not restored) = %v, want nil", err)
	}
	kill(e)
	e2 := openQuiet(t, dir, clk)
	wantErr(t, "Authenticate(restored jti after kill)", auth(e2, clk, s, s.JKT, "jti-lost"), ErrReplay)
	if n, err := e2.RestoreReplay(ctx, entries[:1], now); err != nil || n != 0 {
		t.Errorf("RestoreReplay(already restored) = %d, %v; want 0", n, err)
	}
}
