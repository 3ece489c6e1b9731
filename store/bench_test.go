package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/store/storetest"
)

func benchEmbedded(b *testing.B) (Store, clock.Clock) {
	clk := clock.NewFake(testStart())
	e, err := OpenEmbedded(EmbeddedConfig{Dir: b.TempDir()}, Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e, clk
}

func benchRedis(b *testing.B) (Store, clock.Clock) {
	url, _, _ := storetest.StartRedis(b)
	clk := clock.NewFake(testStart())
	return newTestRedis(b, url, "", clk, 0), clk
}

func benchAuthenticate(b *testing.B, st Store, clk clock.Clock) {
	s, err := newSession(b, st, clk, "alice", PrincipalLimits{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := clk.Now()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := st.Authenticate(ctx, AuthRequest{SessionID: s.ID, JKT: s.JKT, JTI: strconv.Itoa(i),
			ReplayExpiresAt: now.Add(time.Minute), Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchGrant(b *testing.B, st Store, clk clock.Clock) {
	s, err := newSession(b, st, clk, "alice", PrincipalLimits{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	lim := PrincipalLimits{MaxCallsPerHour: 1 << 40, MaxCostCentsPerDay: 1 << 40}
	b.ResetTimer()
	for b.Loop() {
		if _, err := st.Grant(ctx, GrantRequest{GrantID: uuid.NewString(), SessionID: s.ID, Principal: "alice",
			Calls: 1, CostCents: 1, Limits: lim, Now: clk.Now(), TTL: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEmbeddedAuthenticate(b *testing.B) {
	st, clk := benchEmbedded(b)
	benchAuthenticate(b, st, clk)
}
func BenchmarkEmbeddedGrant(b *testing.B) { st, clk := benchEmbedded(b); benchGrant(b, st, clk) }
func BenchmarkRedisAuthenticate(b *testing.B) {
	st, clk := benchRedis(b)
	benchAuthenticate(b, st, clk)
}
func BenchmarkRedisGrant(b *testing.B) { st, clk := benchRedis(b); benchGrant(b, st, clk) }

// seededApprovals is an embedded store keeping 100,000 decided approvals
// and 1,000 pending, spread over 5,000 sessions.
func seededApprovals(b *testing.B) (*Embedded, time.Time) {
	st, clk := benchEmbedded(b)
	e := st.(*Embedded)
	now := clk.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range 101_000 {
		a := &Approval{ID: uuid.NewString(), SessionID: "s-" + strconv.Itoa(i%5000), Principal: "p", ActionID: "a",
			RequestHash: strconv.Itoa(i), State: ApprovalDenied, CreatedAt: now, ExpiresAt: now.Add(15 * time.Minute)}
		if i >= 100_000 {
			a.State = ApprovalPending
		}
		e.apply(&jop{T: opApproval, A: a})
	}
	return e, now
}

// BenchmarkEmbeddedCreateApproval: holding a request with 100,000 decided
// approvals kept (their 7-day retention) and 1,000 pending in other
// sessions. Each hold runs under the store-wide lock, so its cost is
// every execute's wait while requests are being held.
func BenchmarkEmbeddedCreateApproval(b *testing.B) {
	e, now := seededApprovals(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		a := &Approval{ID: uuid.NewString(), SessionID: "bench-" + strconv.Itoa(i), Principal: "p", ActionID: "a",
			RequestHash: "h", ExpiresAt: now.Add(15 * time.Minute)}
		if _, _, err := e.CreateApproval(ctx, a, 10); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbeddedListExpiredApprovals: the gate's expiry sweep (every
// 10 s, under the store-wide lock) with the same 101,000 approvals kept.
func BenchmarkEmbeddedListExpiredApprovals(b *testing.B) {
	e, _ := seededApprovals(b)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ListApprovals(ctx, ApprovalExpired, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisListExpiredApprovals: the gate's expiry sweep (every 10 s)
// with 20,000 decided approvals kept and 200 pending.
func BenchmarkRedisListExpiredApprovals(b *testing.B) {
	st, clk := benchRedis(b)
	r := st.(*Redis)
	ctx := context.Background()
	now := clk.Now()
	for i := range 20_200 {
		a := &Approval{ID: uuid.NewString(), SessionID: "s-" + strconv.Itoa(i%5000), Principal: "p", ActionID: "a",
			RequestHash: strconv.Itoa(i), CreatedAt: now, ExpiresAt: now.Add(15 * time.Minute)}
		if _, _, err := r.CreateApproval(ctx, a, 0); err != nil {
			b.Fatal(err)
		}
		if i < 20_000 {
			if _, err := r.DecideApproval(ctx, a.ID, ApprovalDenied, "op", "", now); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.ListApprovals(ctx, ApprovalExpired, 0); err != nil {
			b.Fatal(err)
		}
	}
}
