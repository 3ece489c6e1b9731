package gate_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/gate/gatetest"
)

func TestIdempotencyKey(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, map[string]any{"budgets": map[string]any{"max_calls": 2}})
	key := http.Header{"Idempotency-Key": {"order-42"}}
	first := a.Execute("echo", map[string]any{"n": 1}, key)
	wantStatus(t, first, 200, "")
	// A repeat returns the stored outcome: same receipt, nothing runs, no budget.
	for range 3 {
		again := a.Execute("echo", map[string]any{"n": 1}, key)
		wantStatus(t, again, 200, "")
		if again.JSON()["receipt_id"] != first.JSON()["receipt_id"] {
			t.Fatalf("repeat receipt = %v, want %v", again.JSON()["receipt_id"], first.JSON()["receipt_id"])
		}
	}
	if n, _ := s.Ledger.Stats(); n != 1 {
		t.Fatalf("receipts = %d after repeats, want 1", n)
	}
	// The same key with other arguments or another action is a conflict.
	wantStatus(t, a.Execute("echo", map[string]any{"n": 2}, key), 409, "idempotency_conflict")
	// The budget was charged once: one call is left.
	wantStatus(t, a.Execute("echo", map[string]any{"n": 3}, nil), 200, "")
	wantStatus(t, a.Execute("echo", map[string]any{"n": 4}, nil), 403, "budget_exhausted")
	// Errors before dispatch are not stored: a key used on a refused call
	// can run once the cause is gone.
	b := newAgent(t, s, map[string]any{"agent_id": "b"})
	k2 := http.Header{"Idempotency-Key": {"retry-me"}}
	wantStatus(t, b.Execute("echo", "not an object", k2), 422, "schema_violation")
	wantStatus(t, b.Execute("echo", map[string]any{"ok": true}, k2), 200, "")
	// Bad keys are refused.
	wantStatus(t, b.Execute("echo", map[string]any{}, http.Header{"Idempotency-Key": {strings.Repeat("k", 129)}}), 400, "invalid_request")
}
