package gate_test

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/lease"
)

func ceiling(n int64) *int64 { return &n }

// Requested scopes are intersected with the principal's; requested budgets
// are capped by its ceilings (PROTOCOL §3.1).
func TestLeaseScopesAndCeilings(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{
		GateID: "g", Dev: true, TrustAgentID: true,
		Principals: map[string]gate.Principal{
			"*":            {AllowedScopes: []string{"tools:call"}},
			"agent:capped": {AllowedScopes: []string{"tools:call", "audit:read"}, MaxCallsPerSession: ceiling(2), MaxCostPerSession: ceiling(50)},
		},
	}))
	tests := []struct {
		name     string
		req      map[string]any
		status   int
		code     string
		scopes   []any
		maxCalls any
		maxCost  any
	}{
		{name: "no-scope-left", req: map[string]any{"agent_id": "plain", "scopes": []string{"audit:read", "ns:write"}}, status: 403, code: "scope_not_permitted"},
		{name: "intersected", req: map[string]any{"agent_id": "plain", "scopes": []string{"tools:call", "audit:read"}}, status: 200, scopes: []any{"tools:call"}},
		{name: "ceiling-when-unrequested", req: map[string]any{"agent_id": "capped"}, status: 200, scopes: []any{"tools:call"}, maxCalls: float64(2), maxCost: float64(50)},
		{name: "ceiling-caps-request", req: map[string]any{"agent_id": "capped", "budgets": map[string]any{"max_calls": 1000, "max_cost_usd_cents": 10}}, status: 200, scopes: []any{"tools:call"}, maxCalls: float64(2), maxCost: float64(10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.NewAgent(t).TakeLease(tt.req)
			wantStatus(t, r, tt.status, tt.code)
			if tt.status != 200 {
				return
			}
			m := r.JSON()
			got, _ := m["scopes"].([]any)
			if len(got) != len(tt.scopes) || got[0] != tt.scopes[0] {
				t.Errorf("scopes = %v, want %v", got, tt.scopes)
			}
			b, _ := m["budgets"].(map[string]any)
			if b["max_calls"] != tt.maxCalls || b["max_cost_usd_cents"] != tt.maxCost {
				t.Errorf("budgets = %v, want max_calls %v max_cost %v", b, tt.maxCalls, tt.maxCost)
			}
		})
	}
	// The ceiling is enforced, not just advertised.
	a := newAgent(t, s, map[string]any{"agent_id": "capped", "budgets": map[string]any{"max_calls": 1000}})
	for range 2 {
		wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	}
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 403, "budget_exhausted")
}

// Two DPoP (or Authorization) headers are refused: which one a proxy or a
// library would pick is ambiguous.
func TestDuplicateAuthHeadersRefused(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	body := []byte(`{}`)
	p1 := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	p2 := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	for _, h := range []http.Header{
		{"Authorization": {"DPoP " + a.Lease}, "Dpop": {p1, p2}},
		{"Authorization": {"DPoP " + a.Lease, "DPoP " + a.Lease}, "Dpop": {p1}},
	} {
		h.Set("Content-Type", "application/json")
		r := gatetest.Do(t, s.Client(), "POST", echoPath, body, h)
		wantStatus(t, r, 401, "invalid_dpop")
	}
	// Neither refused proof was consumed.
	wantStatus(t, a.CallWithProof("POST", echoPath, body, p1, nil), 200, "")
}

// A renewal in the last second of the session's maximum lifetime, when no
// lease of at least a second fits before the end, is 401 lease_expired (the
// agent opens a new session), never 500; a renewal with a second to spare
// still gets a lease (PROTOCOL §3.2).
func TestRenewAtSessionEnd(t *testing.T) {
	tests := []struct {
		name   string
		before time.Duration // renew this long before the session's end
		status int
		code   string
	}{
		{name: "ok/one_second_left", before: 1200 * time.Millisecond, status: 200},
		{name: "fail/within_the_last_second", before: 400 * time.Millisecond, status: 401, code: "lease_expired"},
		{name: "fail/at_the_end", before: 0, status: 401, code: "lease_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The session starts 700 ms into a second, as a real clock does.
			start := time.Now().Truncate(time.Second).Add(700 * time.Millisecond)
			clk := clock.NewFake(start)
			life := time.Minute
			s := gatetest.NewServer(t, gatetest.WithClock(clk),
				gatetest.WithLease(lease.Config{DefaultTTL: life, MaxTTL: life, SessionLifetime: life}))
			a := newAgent(t, s, nil)
			clk.Set(start.Add(life - tt.before))
			r := a.Call("POST", "/v1/leases/renew", nil)
			wantStatus(t, r, tt.status, tt.code)
			if tt.status != 200 {
				return
			}
			exp, err := time.Parse(time.RFC3339, r.JSON()["expires_at"].(string))
			if err != nil || exp.After(start.Add(life)) || !exp.After(clk.Now().Truncate(time.Second)) {
				t.Fatalf("renewed expires_at = %v (%v), want after now %v and not after the session end %v", exp, err, clk.Now(), start.Add(life))
			}
		})
	}
}

// The body nesting cap (512) holds while brackets only open: a body of
// unclosed "[" is refused as nested too deeply as soon as it passes the
// cap, without first building one frame per bracket (a 1 MiB body of "["
// cost ≈ 100 MB of allocations before it was refused).
func TestLeaseBodyNestingCapped(t *testing.T) {
	s := gatetest.NewServer(t)
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	for _, n := range []int{1000, 1 << 20} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			body := []byte(strings.Repeat("[", n))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r := gatetest.Do(t, s.Client(), "POST", "/v1/leases", body, jsonCT)
			runtime.ReadMemStats(&after)
			if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
				t.Errorf("POST /v1/leases with %d unclosed brackets allocated %d MiB, want < 32 MiB", n, got>>20)
			}
			wantStatus(t, r, 400, "invalid_request")
		})
	}
}
