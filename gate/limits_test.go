package gate_test

import (
	"net/http"
	"strings"
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

// Lease and admin bodies are parsed as strictly as proofs and arguments.
func TestStrictRequestBodies(t *testing.T) {
	s := gatetest.NewServer(t)
	a := s.NewAgent(t)
	jwk := string(a.Key.JWK())
	ct := http.Header{"Content-Type": {"application/json"}}
	for _, tt := range []struct {
		name, body, code string
	}{
		{"duplicate-top", `{"dpop_jwk":` + jwk + `,"agent_id":"a","agent_id":"b"}`, "invalid_json"},
		{"duplicate-nested", `{"dpop_jwk":` + jwk + `,"budgets":{"max_calls":1,"max_calls":100}}`, "invalid_json"},
		{"not-utf8", "{\"dpop_jwk\":" + jwk + ",\"agent_id\":\"\xff\"}", "invalid_json"},
		{"array", `[1,2]`, "invalid_request"},
		{"two-values", `{"dpop_jwk":` + jwk + `} {}`, "invalid_json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := gatetest.Do(t, s.Client(), "POST", "/v1/leases", []byte(tt.body), ct)
			wantStatus(t, r, 400, tt.code)
		})
	}
	// Same key in two sibling objects is fine.
	ok := `{"dpop_jwk":` + jwk + `,"agent_id":"ok","budgets":{"max_calls":5}}`
	wantStatus(t, gatetest.Do(t, s.Client(), "POST", "/v1/leases", []byte(ok), ct), 200, "")
}

// A negative limit is a configuration mistake: it must be refused at load,
// not panic at Run (max_conns) or silently turn a cap off (the store
// treats anything ≤ 0 as "no limit").
func TestConfigRefusesNegativeLimits(t *testing.T) {
	neg := int64(-1)
	base := func() gate.Config { return gate.Config{GateID: "g", MaxBodyBytes: 1 << 20} }
	tests := []struct {
		name string
		mod  func(*gate.Config)
	}{
		{"max_conns", func(c *gate.Config) { c.MaxConns = -1 }},
		{"max_pending_per_session", func(c *gate.Config) { c.MaxPendingPerSession = -1 }},
		{"shutdown_grace", func(c *gate.Config) { c.ShutdownGrace = -1 }},
		{"read_header_timeout", func(c *gate.Config) { c.ReadHeaderTimeout = -1 }},
		{"max_calls_per_hour", func(c *gate.Config) {
			c.Principals = map[string]gate.Principal{"crawler": {MaxCallsPerHour: -1}}
		}},
		{"max_cost_usd_cents_per_day", func(c *gate.Config) {
			c.Principals = map[string]gate.Principal{"crawler": {MaxCostPerDay: -1}}
		}},
		{"max_live_sessions", func(c *gate.Config) {
			c.Principals = map[string]gate.Principal{"*": {MaxLiveSessions: -1}}
		}},
		{"max_calls_per_session", func(c *gate.Config) {
			c.Principals = map[string]gate.Principal{"crawler": {MaxCallsPerSession: &neg}}
		}},
		{"max_cost_usd_cents_per_session", func(c *gate.Config) {
			c.Principals = map[string]gate.Principal{"crawler": {MaxCostPerSession: &neg}}
		}},
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("Validate(base) = %v, want nil", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate(%s = -1) = nil, want an error", tt.name)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("Validate(%s = -1) = %q, want it to name the key", tt.name, err)
			}
		})
	}
}
