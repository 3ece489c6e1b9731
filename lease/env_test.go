package lease_test

import (
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
	"github.com/rs/zerolog"
)

// t0 returns the fake clock's start.
func t0() time.Time { return time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) }

const testHTU = "http://localhost/v1/actions/echo/execute"

// env is a keys dir, an Authority on a fake clock, an agent key and a lease
// bound to it.
type env struct {
	dir   string
	clk   *clock.Fake
	keys  *lease.Keys
	auth  *lease.Authority
	agent *leasetest.AgentKey
	token string
}

func newEnv(tb testing.TB, cfg lease.Config) *env {
	tb.Helper()
	e := &env{dir: tb.TempDir(), clk: clock.NewFake(t0())}
	var err error
	e.keys, err = lease.LoadKeys(e.dir, e.clk)
	if err != nil {
		tb.Fatalf("LoadKeys: %v", err)
	}
	e.auth, err = lease.New(cfg, e.keys, lease.Deps{Clock: e.clk, Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	e.agent = leasetest.NewAgentKey()
	e.agent.Clock = e.clk
	e.token, err = e.auth.Issue(lease.Claims{
		Subject:   "uid:1000",
		SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		JKT:       e.agent.Thumbprint(),
		Scopes:    []string{"tools:call"},
	})
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return e
}
