package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/latchgate/latchgate/clock"
)

// opener opens a fresh, empty store driven by clk.
type opener func(t *testing.T, clk *clock.Fake) Store

// testStart is a fake "now" ahead of the wall clock (Redis expires replay
// keys at absolute wall-clock times) and 10 minutes into a UTC hour.
func testStart() time.Time {
	return time.Now().UTC().Truncate(time.Hour).Add(time.Hour + 10*time.Minute)
}

func ptr(n int64) *int64 { return &n }

type sessOpt func(*Session)

func withMaxCalls(n int64) sessOpt { return func(s *Session) { s.MaxCalls = ptr(n) } }
func withMaxCost(n int64) sessOpt  { return func(s *Session) { s.MaxCostCents = ptr(n) } }

func newSession(t testing.TB, st Store, clk clock.Clock, principal string, limits PrincipalLimits, opts ...sessOpt) (*Session, error) {
	t.Helper()
	now := clk.Now()
	id := uuid.NewString()
	s := &Session{
		ID: id, Principal: principal, JKT: "jkt-" + id, Scopes: []string{"tools:call"},
		CreatedAt: now, MaxExpiresAt: now.Add(24 * time.Hour), LeaseExpiresAt: now.Add(15 * time.Minute),
	}
	for _, o := range opts {
		o(s)
	}
	return st.CreateSession(context.Background(), s, limits)
}

func mustSession(t testing.TB, st Store, clk clock.Clock, principal string, opts ...sessOpt) *Session {
	t.Helper()
	s, err := newSession(t, st, clk, principal, PrincipalLimits{}, opts...)
	if err != nil {
		t.Fatalf("CreateSession(%s) = %v", principal, err)
	}
	return s
}

func auth(st Store, clk clock.Clock, s *Session, jkt, jti string) error {
	now := clk.Now()
	_, err := st.Authenticate(context.Background(), AuthRequest{
		SessionID: s.ID, JKT: jkt, JTI: jti, ReplayExpiresAt: now.Add(5 * time.Minute), Now: now,
	})
	return err
}

func grant(st Store, clk clock.Clock, s *Session, calls, cost int64, limits PrincipalLimits) (*Grant, error) {
	return st.Grant(context.Background(), GrantRequest{
		GrantID: uuid.NewString(), SessionID: s.ID, Principal: s.Principal, Calls: calls, CostCents: cost,
		Limits: limits, Now: clk.Now(), TTL: time.Hour,
	})
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if want == nil && got != nil || want != nil && !errors.Is(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func runContract(t *testing.T, open opener) {
	ctx := context.Background()
	fresh := func(t *testing.T) (Store, *clock.Fake) {
		clk := clock.NewFake(testStart())
		return open(t, clk), clk
	}

	t.Run("session_lifecycle", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice", withMaxCalls(5))
		got, err := st.GetSession(ctx, s.ID)
		if err != nil {
			t.Fatalf("GetSession = %v", err)
		}
		if got.Principal != "alice" || got.JKT != s.JKT || *got.MaxCalls != 5 || got.Revoked {
			t.Fatalf("GetSession = %+v, want the created session", got)
		}
		_, err = st.GetSession(ctx, "nope")
		wantErr(t, "GetSession(unknown)", err, ErrNotFound)
		lease := clk.Now().Add(time.Hour)
		r, err := st.RenewSession(ctx, s.ID, []string{"a", "b"}, lease, clk.Now())
		if err != nil || len(r.Scopes) != 2 || !r.LeaseExpiresAt.Equal(lease) {
			t.Fatalf("RenewSession = %+v, %v, want scopes [a b] and new lease", r, err)
		}
		got, _ = st.GetSession(ctx, s.ID)
		if len(got.Scopes) != 2 || !got.LeaseExpiresAt.Equal(lease) {
			t.Fatalf("GetSession after renew = %+v", got)
		}
		_, err = st.RenewSession(ctx, "nope", nil, lease, clk.Now())
		wantErr(t, "RenewSession(unknown)", err, ErrNotFound)
		_, err = st.CreateSession(ctx, s, PrincipalLimits{})
		wantErr(t, "CreateSession(same id)", err, ErrConflict)
	})

	t.Run("authenticate", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice")
		other := mustSession(t, st, clk, "alice")
		cases := []struct {
			name string
			sess *Session
			jkt  string
			jti  string
			want error
		}{
			{"ok", s, s.JKT, "j1", nil},
			{"replay", s, s.JKT, "j1", ErrReplay},
			{"wrong_jkt", s, "jkt-evil", "j2", ErrNotFound},
			{"refused_never_inserts_jti", s, s.JKT, "j2", nil},
			{"same_jti_other_key", other, other.JKT, "j1", nil},
			{"unknown_session", &Session{ID: "nope"}, s.JKT, "j3", ErrNotFound},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				wantErr(t, fmt.Sprintf("Authenticate(%s)", c.jti), auth(st, clk, c.sess, c.jkt, c.jti), c.want)
			})
		}
	})

	t.Run("revoke_session", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice")
		keep := mustSession(t, st, clk, "alice")
		n, err := st.Revoke(ctx, RevokeRequest{SessionID: s.ID}, clk.Now())
		if err != nil || n != 1 {
			t.Fatalf("Revoke(session) = %d, %v, want 1", n, err)
		}
		wantErr(t, "Authenticate(revoked)", auth(st, clk, s, s.JKT, "x"), ErrRevoked)
		_, err = grant(st, clk, s, 1, 0, PrincipalLimits{})
		wantErr(t, "Grant(revoked)", err, ErrRevoked)
		_, err = st.RenewSession(ctx, s.ID, nil, clk.Now().Add(time.Hour), clk.Now())
		wantErr(t, "RenewSession(revoked)", err, ErrRevoked)
		if got, _ := st.GetSession(ctx, s.ID); got == nil || !got.Revoked {
			t.Fatalf("GetSession(revoked).Revoked = false, want true")
		}
		wantErr(t, "Authenticate(other session)", auth(st, clk, keep, keep.JKT, "x"), nil)
		n, err = st.Revoke(ctx, RevokeRequest{SessionID: s.ID}, clk.Now())
		if err != nil || n != 0 {
			t.Fatalf("Revoke(session again) = %d, %v, want 0", n, err)
		}
		_, err = st.Revoke(ctx, RevokeRequest{SessionID: "nope"}, clk.Now())
		wantErr(t, "Revoke(unknown)", err, ErrNotFound)
		_, err = st.Revoke(ctx, RevokeRequest{SessionID: s.ID, All: true}, clk.Now())
		if err == nil {
			t.Fatalf("Revoke(two fields) = nil, want error")
		}
	})

	t.Run("revoke_principal", func(t *testing.T) {
		st, clk := fresh(t)
		a1 := mustSession(t, st, clk, "alice")
		a2 := mustSession(t, st, clk, "alice")
		b := mustSession(t, st, clk, "bob")
		n, err := st.Revoke(ctx, RevokeRequest{Principal: "alice"}, clk.Now())
		if err != nil || n != 2 {
			t.Fatalf("Revoke(principal) = %d, %v, want 2", n, err)
		}
		for _, s := range []*Session{a1, a2} {
			wantErr(t, "Authenticate(alice old)", auth(st, clk, s, s.JKT, "x"), ErrRevoked)
			_, err := grant(st, clk, s, 1, 0, PrincipalLimits{})
			wantErr(t, "Grant(alice old)", err, ErrRevoked)
		}
		wantErr(t, "Authenticate(bob)", auth(st, clk, b, b.JKT, "x"), nil)
		a3 := mustSession(t, st, clk, "alice")
		wantErr(t, "Authenticate(alice new)", auth(st, clk, a3, a3.JKT, "x"), nil)
		if _, err := grant(st, clk, a3, 1, 0, PrincipalLimits{}); err != nil {
			t.Fatalf("Grant(alice new) = %v", err)
		}
		n, err = st.Revoke(ctx, RevokeRequest{Principal: "alice"}, clk.Now())
		if err != nil || n != 1 {
			t.Fatalf("Revoke(principal again) = %d, %v, want 1", n, err)
		}
	})

	t.Run("revoke_all", func(t *testing.T) {
		st, clk := fresh(t)
		a := mustSession(t, st, clk, "alice")
		b := mustSession(t, st, clk, "bob")
		expired := mustSession(t, st, clk, "carol")
		if _, err := st.RenewSession(ctx, expired.ID, nil, clk.Now().Add(time.Second), clk.Now()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
		n, err := st.Revoke(ctx, RevokeRequest{All: true}, clk.Now())
		if err != nil || n != 2 {
			t.Fatalf("Revoke(all) = %d, %v, want 2", n, err)
		}
		for _, s := range []*Session{a, b} {
			wantErr(t, "Authenticate(old)", auth(st, clk, s, s.JKT, "x"), ErrRevoked)
		}
		c := mustSession(t, st, clk, "alice")
		wantErr(t, "Authenticate(new)", auth(st, clk, c, c.JKT, "x"), nil)
		n, err = st.Revoke(ctx, RevokeRequest{Principal: "alice"}, clk.Now())
		if err != nil || n != 1 {
			t.Fatalf("Revoke(principal after all) = %d, %v, want 1", n, err)
		}
	})

	t.Run("session_limit", func(t *testing.T) {
		st, clk := fresh(t)
		lim := PrincipalLimits{MaxLiveSessions: 2}
		s1, err1 := newSession(t, st, clk, "alice", lim)
		_, err2 := newSession(t, st, clk, "alice", lim)
		if err1 != nil || err2 != nil {
			t.Fatalf("CreateSession under cap = %v, %v", err1, err2)
		}
		_, err := newSession(t, st, clk, "alice", lim)
		wantErr(t, "CreateSession(at cap)", err, ErrSessionLimit)
		if _, err := newSession(t, st, clk, "bob", lim); err != nil {
			t.Fatalf("CreateSession(other principal) = %v", err)
		}
		if _, err := st.Revoke(ctx, RevokeRequest{SessionID: s1.ID}, clk.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := newSession(t, st, clk, "alice", lim); err != nil {
			t.Fatalf("CreateSession(after revoke) = %v", err)
		}
		_, err = newSession(t, st, clk, "alice", lim)
		wantErr(t, "CreateSession(at cap again)", err, ErrSessionLimit)
		clk.Advance(16 * time.Minute) // leases expired
		if _, err := newSession(t, st, clk, "alice", lim); err != nil {
			t.Fatalf("CreateSession(after leases expired) = %v", err)
		}
	})

	t.Run("grant_budgets", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice", withMaxCalls(2), withMaxCost(100))
		g1, err := grant(st, clk, s, 1, 60, PrincipalLimits{})
		if err != nil {
			t.Fatalf("Grant 1 = %v", err)
		}
		_, err = grant(st, clk, s, 1, 60, PrincipalLimits{})
		wantErr(t, "Grant(cost over)", err, ErrBudgetExhausted)
		if _, err := grant(st, clk, s, 1, 40, PrincipalLimits{}); err != nil {
			t.Fatalf("Grant 2 = %v", err)
		}
		_, err = grant(st, clk, s, 1, 0, PrincipalLimits{})
		wantErr(t, "Grant(calls over)", err, ErrBudgetExhausted)
		got, _ := st.GetSession(ctx, s.ID)
		if got.CallsUsed != 2 || got.CostUsedCents != 100 || *got.CallsRemaining() != 0 {
			t.Fatalf("counters = %d calls, %d cents, want 2, 100", got.CallsUsed, got.CostUsedCents)
		}
		if err := st.Refund(ctx, g1); err != nil {
			t.Fatalf("Refund = %v", err)
		}
		got, _ = st.GetSession(ctx, s.ID)
		if got.CallsUsed != 1 || got.CostUsedCents != 40 {
			t.Fatalf("counters after refund = %d, %d, want 1, 40", got.CallsUsed, got.CostUsedCents)
		}
		req := GrantRequest{GrantID: g1.GrantID, SessionID: s.ID, Principal: "alice", Calls: 1, Now: clk.Now()}
		_, err = st.Grant(ctx, req)
		wantErr(t, "Grant(consumed id)", err, ErrGrantConsumed)
		req.GrantID, req.Principal = "fresh", "bob"
		_, err = st.Grant(ctx, req)
		wantErr(t, "Grant(wrong principal)", err, ErrNotFound)
		req.Principal, req.SessionID = "alice", "nope"
		_, err = st.Grant(ctx, req)
		wantErr(t, "Grant(unknown session)", err, ErrNotFound)
	})

	t.Run("principal_limits_span_sessions", func(t *testing.T) {
		st, clk := fresh(t)
		lim := PrincipalLimits{MaxCallsPerHour: 3, MaxCostCentsPerDay: 1000}
		a := mustSession(t, st, clk, "alice")
		for i := range 2 {
			if _, err := grant(st, clk, a, 1, 0, lim); err != nil {
				t.Fatalf("Grant %d = %v", i, err)
			}
		}
		b := mustSession(t, st, clk, "alice") // a new session does not escape
		g, err := grant(st, clk, b, 1, 0, lim)
		if err != nil {
			t.Fatalf("Grant 3 = %v", err)
		}
		_, err = grant(st, clk, b, 1, 0, lim)
		wantErr(t, "Grant(hour ceiling, new session)", err, ErrBudgetExhausted)
		if _, err := grant(st, clk, mustSession(t, st, clk, "bob"), 1, 0, lim); err != nil {
			t.Fatalf("Grant(other principal) = %v", err)
		}
		if err := st.Refund(ctx, g); err != nil {
			t.Fatal(err)
		}
		if _, err := grant(st, clk, b, 1, 0, lim); err != nil {
			t.Fatalf("Grant(after refund) = %v", err)
		}
		clk.Advance(time.Hour) // next UTC hour
		if _, err := grant(st, clk, b, 1, 990, lim); err != nil {
			t.Fatalf("Grant(next hour) = %v", err)
		}
		_, err = grant(st, clk, mustSession(t, st, clk, "alice"), 1, 20, lim)
		wantErr(t, "Grant(day cost ceiling)", err, ErrBudgetExhausted)
	})

	t.Run("concurrent_grants", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice", withMaxCalls(20))
		if n := raceGrants(st, clk, s, 100); n != 20 {
			t.Fatalf("successful grants = %d, want 20", n)
		}
	})

	t.Run("concurrent_replay", func(t *testing.T) {
		st, clk := fresh(t)
		s := mustSession(t, st, clk, "alice")
		var ok, replay atomic.Int64
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				switch err := auth(st, clk, s, s.JKT, "same"); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrReplay):
					replay.Add(1)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || replay.Load() != 199 {
			t.Fatalf("same jti ×200: %d ok, %d replay, want 1, 199", ok.Load(), replay.Load())
		}
	})

	t.Run("idempotency", func(t *testing.T) {
		st, _ := fresh(t)
		rec := &IdemRecord{Principal: "alice", Key: "k1", ActionID: "echo", RequestHash: "h1"}
		got, err := st.BeginIdempotent(ctx, rec, time.Hour)
		if got != nil || err != nil {
			t.Fatalf("BeginIdempotent(new) = %+v, %v, want nil, nil", got, err)
		}
		got, err = st.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k1", ActionID: "other"}, time.Hour)
		if err != nil || got == nil || got.State != IdemRunning || got.ActionID != "echo" {
			t.Fatalf("BeginIdempotent(repeat) = %+v, %v, want the running record", got, err)
		}
		if got, _ := st.BeginIdempotent(ctx, &IdemRecord{Principal: "bob", Key: "k1"}, time.Hour); got != nil {
			t.Fatalf("BeginIdempotent(other principal) = %+v, want nil", got)
		}
		if err := st.SetIdempotentGrant(ctx, "alice", "k1", "g1", "r1"); err != nil {
			t.Fatalf("SetIdempotentGrant = %v", err)
		}
		body := json.RawMessage(`{"decision":"executed"}`)
		if err := st.FinishIdempotent(ctx, "alice", "k1", 200, body, time.Hour); err != nil {
			t.Fatalf("FinishIdempotent = %v", err)
		}
		got, err = st.BeginIdempotent(ctx, rec, time.Hour)
		if err != nil || got == nil || got.State != IdemDone || got.Status != 200 || got.GrantID != "g1" || got.ReceiptID != "r1" || string(got.Body) != string(body) {
			t.Fatalf("BeginIdempotent(done) = %+v, %v, want the stored outcome", got, err)
		}
		wantErr(t, "AbortIdempotent(done)", st.AbortIdempotent(ctx, "alice", "k1"), ErrConflict)
		wantErr(t, "FinishIdempotent(done)", st.FinishIdempotent(ctx, "alice", "k1", 200, body, time.Hour), ErrConflict)
		wantErr(t, "SetIdempotentGrant(unknown)", st.SetIdempotentGrant(ctx, "alice", "nope", "g", "r"), ErrNotFound)
		if _, err := st.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k2"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "AbortIdempotent(running)", st.AbortIdempotent(ctx, "alice", "k2"), nil)
		if got, _ := st.BeginIdempotent(ctx, &IdemRecord{Principal: "alice", Key: "k2"}, time.Hour); got != nil {
			t.Fatalf("BeginIdempotent(after abort) = %+v, want nil", got)
		}
		wantErr(t, "AbortIdempotent(unknown)", st.AbortIdempotent(ctx, "alice", "nope"), nil)
	})

	t.Run("approvals", func(t *testing.T) {
		st, clk := fresh(t)
		a := newApproval(clk, "s1", "h1")
		got, created, err := st.CreateApproval(ctx, a, 2)
		if err != nil || !created || got.State != ApprovalPending {
			t.Fatalf("CreateApproval = %+v, %v, %v", got, created, err)
		}
		dup := newApproval(clk, "s1", "h1")
		got, created, err = st.CreateApproval(ctx, dup, 2)
		if err != nil || created || got.ID != a.ID {
			t.Fatalf("CreateApproval(identical) = %v, %v, %v, want %s, false", got, created, err, a.ID)
		}
		clk.Advance(time.Second)
		b := newApproval(clk, "s1", "h2")
		if _, _, err := st.CreateApproval(ctx, b, 2); err != nil {
			t.Fatal(err)
		}
		_, _, err = st.CreateApproval(ctx, newApproval(clk, "s1", "h3"), 2)
		wantErr(t, "CreateApproval(too many)", err, ErrTooManyPending)
		if _, _, err := st.CreateApproval(ctx, newApproval(clk, "s2", "h3"), 2); err != nil {
			t.Fatalf("CreateApproval(other session) = %v", err)
		}
		ga, err := st.GetApproval(ctx, a.ID)
		if err != nil || string(ga.Args) != string(a.Args) {
			t.Fatalf("GetApproval = %+v, %v", ga, err)
		}
		_, err = st.GetApproval(ctx, "nope")
		wantErr(t, "GetApproval(unknown)", err, ErrNotFound)

		// Claim races: exactly one winner.
		var wins atomic.Int64
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				c := Claim{GateID: fmt.Sprint("g", i), By: "op", Deadline: clk.Now().Add(time.Minute), ReceiptID: fmt.Sprint("rcpt-", i)}
				_, err := st.ClaimApproval(ctx, a.ID, c, clk.Now())
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, ErrConflict) {
					t.Errorf("ClaimApproval = %v, want nil or ErrConflict", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("claims won = %d, want 1", wins.Load())
		}
		cur, _ := st.GetApproval(ctx, a.ID)
		if cur.Claim == nil || cur.Claim.Token != 1 || !strings.HasPrefix(cur.Claim.ReceiptID, "rcpt-") {
			t.Fatalf("claim = %+v, want token 1 and the winner's receipt id", cur.Claim)
		}
		_, err = st.DecideApproval(ctx, a.ID, ApprovalDenied, "op", "no", clk.Now())
		wantErr(t, "DecideApproval(claimed)", err, ErrConflict)
		// The claimant crashed: after the deadline the next claim wins with a higher token.
		clk.Advance(2 * time.Minute)
		// It keeps the stale claim's receipt id: it runs nothing and looks
		// for that receipt.
		re, err := st.ClaimApproval(ctx, a.ID, Claim{GateID: "g2", By: "op2", Deadline: clk.Now().Add(time.Minute), ReceiptID: "rcpt-new"}, clk.Now())
		if err != nil || re.Claim.Token != 2 || re.Claim.GateID != "g2" || re.Claim.ReceiptID != cur.Claim.ReceiptID {
			t.Fatalf("ClaimApproval(after deadline) = %+v, %v, want token 2 and receipt id %s", re.Claim, err, cur.Claim.ReceiptID)
		}
		_, err = st.FinishApproval(ctx, ApprovalFinish{ID: a.ID, Token: 1, State: ApprovalApproved})
		wantErr(t, "FinishApproval(stale token)", err, ErrConflict)
		fin, err := st.FinishApproval(ctx, ApprovalFinish{ID: a.ID, Token: 2, State: ApprovalApproved,
			DecidedBy: "op2", DecidedAt: clk.Now(), ReceiptID: "r1", Output: json.RawMessage(`{"ok":true}`)})
		if err != nil || fin.State != ApprovalApproved || fin.ReceiptID != "r1" || fin.Claim == nil {
			t.Fatalf("FinishApproval = %+v, %v, want approved with claim kept", fin, err)
		}
		again, err := st.ClaimApproval(ctx, a.ID, Claim{GateID: "g3"}, clk.Now())
		if err != nil || again.State != ApprovalApproved || again.Claim.Token != 2 {
			t.Fatalf("ClaimApproval(decided) = %+v, %v, want unchanged approved", again, err)
		}
		// A decided approval no longer counts as pending nor dedupes.
		if _, created, err := st.CreateApproval(ctx, newApproval(clk, "s1", "h1"), 2); err != nil || !created {
			t.Fatalf("CreateApproval(after decision) = %v, %v, want created", created, err)
		}
		d, err := st.DecideApproval(ctx, b.ID, ApprovalDenied, "op", "no", clk.Now())
		if err != nil || d.State != ApprovalDenied || d.DecidedBy != "op" || d.Reason != "no" {
			t.Fatalf("DecideApproval = %+v, %v", d, err)
		}
		d, err = st.DecideApproval(ctx, b.ID, ApprovalExpired, "op", "", clk.Now())
		if err != nil || d.State != ApprovalDenied {
			t.Fatalf("DecideApproval(decided) = %+v, %v, want unchanged denied", d, err)
		}

		pend, err := st.ListApprovals(ctx, ApprovalPending, 0)
		if err != nil || len(pend) != 2 {
			t.Fatalf("ListApprovals(pending) = %d, %v, want 2", len(pend), err)
		}
		all, _ := st.ListApprovals(ctx, "", 0)
		if len(all) != 4 {
			t.Fatalf("ListApprovals(all) = %d, want 4", len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i].CreatedAt.After(all[i-1].CreatedAt) {
				t.Fatalf("ListApprovals not newest first at %d", i)
			}
		}
		if one, _ := st.ListApprovals(ctx, "", 1); len(one) != 1 || one[0].ID != all[0].ID {
			t.Fatalf("ListApprovals(limit 1) = %v", one)
		}
	})

	t.Run("approval_expiry", func(t *testing.T) {
		st, clk := fresh(t)
		a := newApproval(clk, "s1", "h1")
		b := newApproval(clk, "s1", "h2")
		for _, x := range []*Approval{a, b} {
			if _, _, err := st.CreateApproval(ctx, x, 0); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(time.Hour + time.Second)
		if l, _ := st.ListApprovals(ctx, ApprovalExpired, 0); len(l) != 2 {
			t.Fatalf("ListApprovals(expired) = %d, want 2 (pending past expiry)", len(l))
		}
		if l, _ := st.ListApprovals(ctx, ApprovalPending, 0); len(l) != 0 {
			t.Fatalf("ListApprovals(pending) = %d, want 0", len(l))
		}
		got, err := st.ClaimApproval(ctx, a.ID, Claim{GateID: "g", Deadline: clk.Now().Add(time.Minute)}, clk.Now())
		if err != nil || got.State != ApprovalExpired || got.Claim != nil {
			t.Fatalf("ClaimApproval(expired) = %+v, %v, want expired, unclaimed", got, err)
		}
		got, err = st.DecideApproval(ctx, b.ID, ApprovalDenied, "op", "", clk.Now())
		if err != nil || got.State != ApprovalExpired {
			t.Fatalf("DecideApproval(expired) = %+v, %v, want expired", got, err)
		}
		if _, created, err := st.CreateApproval(ctx, newApproval(clk, "s1", "h1"), 1); err != nil || !created {
			t.Fatalf("CreateApproval(after expiry) = %v, %v, want created", created, err)
		}
	})

	t.Run("claimed_approval_not_expired_by_time", func(t *testing.T) {
		st, clk := fresh(t)
		a := newApproval(clk, "s1", "h1")
		if _, _, err := st.CreateApproval(ctx, a, 0); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Hour - time.Minute)
		if _, err := st.ClaimApproval(ctx, a.ID, Claim{GateID: "g", Deadline: clk.Now().Add(5 * time.Minute)}, clk.Now()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Minute) // past the expiry, within the claim's deadline
		if got, err := st.GetApproval(ctx, a.ID); err != nil || got.State != ApprovalPending {
			t.Fatalf("GetApproval(claimed past expiry) = %+v, %v, want pending", got, err)
		}
		if l, _ := st.ListApprovals(ctx, ApprovalExpired, 0); len(l) != 0 {
			t.Fatalf("ListApprovals(expired) = %d, want 0 (its claimant may have dispatched)", len(l))
		}
		if l, _ := st.ListApprovals(ctx, ApprovalPending, 0); len(l) != 1 {
			t.Fatalf("ListApprovals(pending) = %d, want 1", len(l))
		}
	})

	t.Run("standing_approvals", func(t *testing.T) {
		st, clk := fresh(t)
		now := clk.Now()
		bad := []struct {
			name string
			s    *Standing
		}{
			{"no_bound", &Standing{ID: uuid.NewString(), Principal: "alice", ActionID: "a", CreatedAt: now}},
			{"no_principal", &Standing{ID: uuid.NewString(), ActionID: "a", Uses: 1, CreatedAt: now}},
			{"negative_uses", &Standing{ID: uuid.NewString(), Principal: "alice", ActionID: "a", Uses: -1, ExpiresAt: now.Add(time.Hour)}},
		}
		for _, c := range bad {
			if err := st.CreateStanding(ctx, c.s); err == nil {
				t.Fatalf("CreateStanding(%s) = nil, want an error", c.name)
			}
		}
		uses := &Standing{ID: uuid.NewString(), Principal: "alice", ActionID: "send_mail", Uses: 2, CreatedAt: now}
		timed := &Standing{ID: uuid.NewString(), Principal: "bob", ActionID: "send_mail", ExpiresAt: now.Add(time.Hour), CreatedAt: now.Add(time.Second)}
		for _, s := range []*Standing{uses, timed} {
			if err := st.CreateStanding(ctx, s); err != nil {
				t.Fatalf("CreateStanding = %v", err)
			}
		}
		wantErr(t, "CreateStanding(same id)", st.CreateStanding(ctx, uses), ErrConflict)
		got, err := st.FindStanding(ctx, "alice", "send_mail", now)
		if err != nil || got.ID != uses.ID {
			t.Fatalf("FindStanding(alice) = %+v, %v, want %s", got, err, uses.ID)
		}
		_, err = st.FindStanding(ctx, "alice", "other", now)
		wantErr(t, "FindStanding(other action)", err, ErrNotFound)
		// Concurrent uses: exactly Uses succeed.
		var ok atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := st.UseStanding(ctx, uses.ID, now); err == nil {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 2 {
			t.Fatalf("UseStanding x8 on uses=2 succeeded %d times, want 2", ok.Load())
		}
		_, err = st.FindStanding(ctx, "alice", "send_mail", now)
		wantErr(t, "FindStanding(used up)", err, ErrNotFound)
		if _, err := st.UseStanding(ctx, timed.ID, now); err != nil {
			t.Fatalf("UseStanding(timed) = %v", err)
		}
		clk.Advance(2 * time.Hour)
		_, err = st.UseStanding(ctx, timed.ID, clk.Now())
		wantErr(t, "UseStanding(expired)", err, ErrNotFound)
		list, err := st.ListStanding(ctx, now)
		if err != nil || len(list) != 1 || list[0].ID != timed.ID {
			t.Fatalf("ListStanding = %d, %v, want only the timed one", len(list), err)
		}
		wantErr(t, "DeleteStanding", st.DeleteStanding(ctx, timed.ID), nil)
		wantErr(t, "DeleteStanding(again)", st.DeleteStanding(ctx, timed.ID), ErrNotFound)
		_, err = st.UseStanding(ctx, timed.ID, now)
		wantErr(t, "UseStanding(revoked)", err, ErrNotFound)
	})

	t.Run("learned_domains", func(t *testing.T) {
		st, clk := fresh(t)
		now := clk.Now()
		d := &LearnedDomain{ID: uuid.NewString(), Principal: "alice", ActionID: "fetch", Host: "api.example.com:443", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		got, err := st.PutLearned(ctx, d)
		if err != nil || got.ID != d.ID {
			t.Fatalf("PutLearned = %+v, %v", got, err)
		}
		again := *d
		again.ID, again.ExpiresAt = uuid.NewString(), now.Add(2*time.Hour)
		got, err = st.PutLearned(ctx, &again)
		if err != nil || got.ID != d.ID {
			t.Fatalf("PutLearned(same host) id = %v, %v, want the existing id %s", got, err, d.ID)
		}
		if _, err := st.PutLearned(ctx, &LearnedDomain{ID: "x", Principal: "alice"}); err == nil {
			t.Fatalf("PutLearned(incomplete) = nil, want an error")
		}
		other := &LearnedDomain{ID: uuid.NewString(), Principal: "bob", ActionID: "fetch", Host: "b.example.com:443", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		if _, err := st.PutLearned(ctx, other); err != nil {
			t.Fatalf("PutLearned(bob) = %v", err)
		}
		for _, c := range []struct {
			name, principal string
			at              time.Time
			want            int
		}{
			{"alice_now", "alice", now, 1}, {"bob_now", "bob", now, 1}, {"carol", "carol", now, 0},
			{"bob_later", "bob", now.Add(time.Hour), 0}, {"alice_later", "alice", now.Add(90 * time.Minute), 1},
		} {
			l, err := st.LearnedFor(ctx, c.principal, "fetch", c.at)
			if err != nil || len(l) != c.want {
				t.Fatalf("LearnedFor(%s) = %d, %v, want %d", c.name, len(l), err, c.want)
			}
		}
		all, err := st.ListLearned(ctx, now)
		if err != nil || len(all) != 2 {
			t.Fatalf("ListLearned = %d, %v, want 2", len(all), err)
		}
		wantErr(t, "DeleteLearned", st.DeleteLearned(ctx, d.ID), nil)
		wantErr(t, "DeleteLearned(again)", st.DeleteLearned(ctx, d.ID), ErrNotFound)
		if l, _ := st.LearnedFor(ctx, "alice", "fetch", now); len(l) != 0 {
			t.Fatalf("LearnedFor after delete = %d, want 0", len(l))
		}
	})
}

func newApproval(clk clock.Clock, session, hash string) *Approval {
	now := clk.Now()
	return &Approval{
		ID: uuid.NewString(), SessionID: session, Principal: "alice", ActionID: "send_mail",
		ActionVersion: "1", ActionDigest: "sha256:x", RiskLevel: "high", RequestHash: hash,
		Args: json.RawMessage(`{"to":"a@example.com"}`), TargetHosts: []string{"smtp.example.com"},
		State: ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}
}

// raceGrants runs n concurrent one-call grants against s (spread over the
// given stores) and returns how many succeeded.
func raceGrants(st Store, clk clock.Clock, s *Session, n int, more ...Store) int64 {
	stores := append([]Store{st}, more...)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := grant(stores[i%len(stores)], clk, s, 1, 0, PrincipalLimits{}); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load()
}
