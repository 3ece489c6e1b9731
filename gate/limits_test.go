package gate_test

import (
	"testing"

	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
)

func TestRateLimits(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{
		GateID: "g", Dev: true, TrustAgentID: true, LeaseRate: 1, ExecRate: 1,
		Principals: map[string]gate.Principal{"*": {AllowedScopes: []string{"tools:call"}}},
	}))
	// Lease issuance per peer: burst 2, then 429 with Retry-After.
	var last *gatetest.Response
	for i := range 5 {
		a := s.NewAgent(t)
		last = a.TakeLease(map[string]any{"agent_id": "r" + string(rune('a'+i))})
		if last.Status == 429 {
			break
		}
	}
	wantStatus(t, last, 429, "rate_limited")
	if last.Header.Get("Retry-After") == "" || last.JSON()["retry_after_seconds"] == nil {
		t.Errorf("429 without Retry-After: %v %s", last.Header, last.Body)
	}
}

func TestExecRateLimit(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{
		GateID: "g", Dev: true, TrustAgentID: true, ExecRate: 1,
		Principals: map[string]gate.Principal{"*": {AllowedScopes: []string{"tools:call"}}},
	}))
	a := newAgent(t, s, nil)
	var last *gatetest.Response
	for range 5 {
		if last = a.Execute("echo", map[string]any{}, nil); last.Status == 429 {
			break
		}
	}
	wantStatus(t, last, 429, "rate_limited")
	if last.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
}

// A client sees only receipts of its own principal.
func TestReceiptOfOtherPrincipalIsNotFound(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, map[string]any{"agent_id": "alice"})
	b := newAgent(t, s, map[string]any{"agent_id": "bob"})
	r := a.Execute("echo", map[string]any{"secret": "alice's"}, nil)
	wantStatus(t, r, 200, "")
	id := r.JSON()["receipt_id"].(string)
	wantStatus(t, a.Call("GET", "/v1/receipts/"+id, nil), 200, "")
	wantStatus(t, b.Call("GET", "/v1/receipts/"+id, nil), 404, "receipt_not_found")
	// Operators see every receipt on the admin socket.
	wantStatus(t, gatetest.Do(t, s.AdminClient(), "GET", "/v1/receipts/"+id, nil, nil), 200, "")
}

// After shutdown starts, requests on open connections answer 503 draining.
func TestDrainingAnswers503(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	s.Gate.SetDraining()
	r := a.Execute("echo", map[string]any{}, nil)
	wantStatus(t, r, 503, "draining")
	if n, _ := s.Ledger.Stats(); n != 1 {
		t.Fatalf("a request ran while draining: %d receipts", n)
	}
}
