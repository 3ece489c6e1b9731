package gate_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/store"
)

// grantLog is the real store, with the TTL of every Grant it was asked for.
type grantLog struct {
	store.Store
	mu   sync.Mutex
	ttls []time.Duration
}

func (g *grantLog) Grant(ctx context.Context, req store.GrantRequest) (*store.Grant, error) {
	g.mu.Lock()
	g.ttls = append(g.ttls, req.TTL)
	g.mu.Unlock()
	return g.Store.Grant(ctx, req)
}

func (g *grantLog) last(t *testing.T) time.Duration {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ttls) == 0 {
		t.Fatal("no Grant reached the store")
	}
	return g.ttls[len(g.ttls)-1]
}

// TestGrantMarkerTTL: the store keeps a consumed-grant marker for the
// action's own timeout plus a minute (the longest its dispatch may take),
// not for the longest timeout any action may have. One marker is kept per
// execute, so this bounds the store's live set and snapshots under load.
func TestGrantMarkerTTL(t *testing.T) {
	dir := t.TempDir()
	quick := "action_id: echo_quick\nversion: 1.0.0\ndescription: Echo with a 5 s timeout.\nrisk_level: low\n" +
		"input_schema:\n  type: object\nexecutor:\n  kind: echo\n  timeout_seconds: 5\negress:\n  profile: none\n"
	if err := os.WriteFile(filepath.Join(dir, "echo_quick.yaml"), []byte(quick), 0o600); err != nil {
		t.Fatal(err)
	}
	var gl *grantLog
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(dir), gatetest.WithStoreWrapper(func(st store.Store) store.Store {
		gl = &grantLog{Store: st}
		return gl
	}))
	a := newAgent(t, s, nil)
	for _, tt := range []struct {
		action string
		want   time.Duration
	}{
		{"echo_quick", 5*time.Second + time.Minute},
		{"echo", actions.DefaultTimeout + time.Minute},
	} {
		if r := a.Execute(tt.action, map[string]any{"n": 1}, nil); r.Status != 200 {
			t.Fatalf("execute %s = %d %s", tt.action, r.Status, r.Body)
		}
		if got := gl.last(t); got != tt.want {
			t.Errorf("%s: grant marker TTL = %v, want %v (its timeout + 1 min)", tt.action, got, tt.want)
		}
	}
}
