package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/latchgate/latchgate/clock"
)

// TestEmbeddedGrantMarkerTTL: the consumed-grant marker refuses a second
// Grant of the same id for its whole TTL (the gate passes a few minutes,
// longer than any dispatch), across a sweep, and is dropped after it.
func TestEmbeddedGrantMarkerTTL(t *testing.T) {
	const ttl = 6 * time.Minute
	tests := []struct {
		name    string
		advance time.Duration
		want    error
	}{
		{"at once", 0, ErrGrantConsumed},
		{"just before the TTL", ttl - time.Millisecond, ErrGrantConsumed},
		{"after the TTL", ttl + time.Second, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(testStart())
			e := openEmbedded(t, t.TempDir(), clk)
			s := mustSession(t, e, clk, "alice")
			req := GrantRequest{GrantID: uuid.NewString(), SessionID: s.ID, Principal: "alice", Calls: 1, Now: clk.Now(), TTL: ttl}
			if _, err := e.Grant(context.Background(), req); err != nil {
				t.Fatalf("Grant = %v", err)
			}
			clk.Advance(tt.advance)
			e.mu.Lock()
			e.sweepLocked(clk.Now())
			n := e.grants.len()
			e.mu.Unlock()
			req.Now = clk.Now()
			_, err := e.Grant(context.Background(), req)
			wantErr(t, "Grant(same id) after "+tt.advance.String(), err, tt.want)
			if tt.want == nil && n != 0 {
				t.Errorf("markers after the TTL and a sweep = %d, want 0", n)
			}
		})
	}
}
