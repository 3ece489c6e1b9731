package policy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestInputValueMatchesJSON: the directly built input value equals the one
// made through json.Marshal for every shape of input.
func TestInputValueMatchesJSON(t *testing.T) {
	n, c := int64(7), int64(0)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	full := func() *Input {
		return &Input{
			Principal: "agent:a", SessionID: "s", AgentID: "a", Peer: Peer{UID: 1000, GID: 100, PID: 4242},
			Action: Action{ID: "echo", Version: "1.0.0", RiskLevel: "low", RequiredScopes: []string{"tools:call"},
				SideEffects: []string{}, CostCents: 3, Egress: Egress{Profile: "none", AllowedDomains: []string{"a.example"}, LearnedDomains: []string{}}},
			Request: Request{Args: json.RawMessage(`{"message":"hé","n":1.5e3,"l":[1,null,true],"o":{}}`), Hash: "sha256:00", SizeBytes: 19,
				TargetHosts: []string{"a.example"}, UnresolvedDomains: []string{}},
			Lease:            Lease{Scopes: []string{"tools:call", "x"}, ExpiresAt: "2026-11-22T13:00:00Z"},
			Budget:           Budget{CallsRemaining: &n, CostRemaining: &c},
			Time:             NewTime(now),
			StandingApproval: json.RawMessage(`{"id":"s1"}`),
		}
	}
	tests := []struct {
		name   string
		mutate func(*Input)
	}{
		{name: "ok/full"},
		{name: "ok/zero", mutate: func(in *Input) { *in = Input{} }},
		{name: "ok/nil-slices", mutate: func(in *Input) {
			in.Action.RequiredScopes, in.Request.TargetHosts, in.Lease.Scopes = nil, nil, nil
		}},
		{name: "ok/unlimited-budget", mutate: func(in *Input) { in.Budget = Budget{} }},
		{name: "ok/null-standing", mutate: func(in *Input) { in.StandingApproval = json.RawMessage("null") }},
		{name: "ok/approval", mutate: func(in *Input) { in.Approval = &Approval{ApprovalID: "ap", ApprovedBy: "uid:0"} }},
		{name: "ok/negative-numbers", mutate: func(in *Input) { in.Peer.UID, in.Action.CostCents = -1, -5 }},
		{name: "ok/escapes", mutate: func(in *Input) { in.Principal = "a\"b\\c\n<&>\u2028" }},
		{name: "ok/invalid-utf8-falls-back", mutate: func(in *Input) { in.Principal = "a\xffb"; in.Lease.Scopes = []string{"\xc3"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := full()
			if tt.mutate != nil {
				tt.mutate(in)
			}
			got, err := inputValue(in)
			if err != nil {
				t.Fatalf("inputValue = %v", err)
			}
			want, err := inputValueJSON(in)
			if err != nil {
				t.Fatalf("inputValueJSON = %v", err)
			}
			if ast.Compare(got, want) != 0 {
				t.Errorf("inputValue(%s) = %v, want %v", tt.name, got, want)
			}
		})
	}
	if _, err := inputValue(&Input{Request: Request{Args: json.RawMessage(`{bad`)}}); err == nil {
		t.Error("inputValue(bad args) = nil error, want an error")
	}
}

func BenchmarkInputValue(b *testing.B) {
	in := baseInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inputValue(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInputValueJSON(b *testing.B) {
	in := baseInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inputValueJSON(in); err != nil {
			b.Fatal(err)
		}
	}
}
