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
